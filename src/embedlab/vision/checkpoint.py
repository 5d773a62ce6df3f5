"""What fine-tuning carries from epoch to epoch (``Loop``, ``History``) and its epoch checkpoints: the model, optimiser,
schedule, history and random states after each complete epoch, written atomically and checked on resume (resolution
and network must match)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from embedlab.distributed import Dist
from embedlab.errors import InputError, MissingFileError
from embedlab.files import UnreadableFile, read_torch, torch_bytes, write_atomic


@dataclass
class History:
    """What the loop measured: the loss of every step and one row per epoch."""

    step_loss: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Loop:
    """What the loop carries from epoch to epoch: the optimiser, its schedule, the history and where to start."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    history: History
    start_epoch: int
    steps_per_epoch: int
    net: nn.Module  # what the training step calls: the model, or its DistributedDataParallel wrapper
    recipe: dict[str, Any]
    dist: Dist
    ema: AveragedModel | None = None


class CheckpointMismatch(InputError):
    """The checkpoint given to resume was written for another network, resolution or set of frozen stages."""


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may touch (dropout, drop-path), as weights_only-loadable data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def recipe_of(model: nn.Module, size: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the resolution and the network's parameter names and shapes."""
    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return {"size": size, "network": hashlib.sha256(shapes.encode()).hexdigest()[:16]}


def save_checkpoint(path: Path, model: nn.Module, loop: Loop, epoch: int) -> None:
    """``model`` and the loop's state after ``epoch`` epochs, written atomically (temporary file, then rename): an
    interrupt never leaves half a checkpoint."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": loop.opt.state_dict(),
        "scheduler": loop.sched.state_dict(),
        "history": asdict(loop.history),
        "rng": rng_state(),
        "recipe": loop.recipe,
    }
    if loop.ema is not None:
        state["ema"] = loop.ema.state_dict()
    write_atomic(path, torch_bytes(state))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The saved training state; a damaged file is a user error that names it and says how to go on."""
    if not path.is_file():
        raise MissingFileError(
            f"no checkpoint at {path}: nothing to resume (the run stopped before its first epoch ended)"
        )
    try:
        state = read_torch(path)
    except UnreadableFile as exc:
        state, reason = None, str(exc)
    else:
        reason = "not a fine-tuning checkpoint"
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "scheduler", "history", "recipe"} <= set(
        state
    ):
        raise CheckpointMismatch(
            f"{path} is damaged ({reason}); embedlab writes it atomically, so it was replaced or cut by "
            "something else. Move it away to train again from the first epoch, or start a new run"
        )
    return state
