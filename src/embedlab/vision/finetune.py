"""The fine-tuning loop, read top to bottom: what it carries from epoch to epoch (``Loop``, ``History``), its epoch
checkpoints (written atomically, checked on resume), the step, the epoch, validation and ``train``. The recipe's
pieces (augmentation, parameter groups, schedule, weight average, test-time augmentation) are in ``recipe``.

Exact resume works at epoch boundaries: each epoch's shuffling and augmentation draw from a
generator seeded by (seed, epoch), and the checkpoint holds the model, optimiser, scheduler and
global RNG states, so epochs k+1.. of a resumed run repeat an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from embedlab.config import FinetuneConfig
from embedlab.distributed import Dist, current
from embedlab.errors import InputError, MissingFileError, UserError
from embedlab.files import UnreadableFile, read_torch, torch_bytes, write_atomic
from embedlab.logs import Progress
from embedlab.rng import rng_state, set_rng_state
from embedlab.text import percent
from embedlab.vision import depthwise, runtime
from embedlab.vision.features import Inputs, preprocess, uses_bf16
from embedlab.vision.fixres import RECALIBRATION_IMAGES, recalibrate_batch_norm
from embedlab.vision.recipe import (
    Views,
    alternating_flips,
    augment,
    check_shards,
    epoch_size,
    epoch_steps,
    finetune_optimizer,
    make_ema,
    make_scheduler,
    param_groups,
    passes,
    predict,
    set_train_mode,
)

log = logging.getLogger(__name__).info


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the last complete checkpoint and how to resume."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite: the learning rate is too high for this recipe."""


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
    epoch_steps: list[int]  # optimiser steps of each pass (a fractional last pass stops early)
    net: nn.Module  # what the training step calls: the model, or its DistributedDataParallel wrapper
    recipe: dict[str, Any]
    dist: Dist
    ema: AveragedModel | None = None


class CheckpointMismatch(InputError):
    """The checkpoint given to resume was written for another network, resolution or set of frozen stages."""


@dataclass(frozen=True)
class Job:
    """What one fine-tuning run is fixed to: its recipe, how images become input, where it runs, where it checkpoints,
    and whether it continues from that checkpoint's last complete epoch."""

    cfg: FinetuneConfig
    inputs: Inputs
    device: torch.device
    checkpoint: Path
    resume: bool = False

    @property
    def eval_inputs(self) -> Inputs:
        """How validation and test images become input: at ``--test-size`` when given, else as in training."""
        return dataclasses.replace(self.inputs, size=self.cfg.test_size or self.inputs.size)


@dataclass(frozen=True)
class EpochRun:
    """One pass over the training images: its index, the global batch's mean loss per step, the correct count, its
    time."""

    index: int
    step_losses: list[float]
    correct: int
    seconds: float


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


def start_loop(model: nn.Module, head: nn.Module, n_train: int, job: Job) -> Loop:
    """Optimiser and schedule for ``cfg``; with ``job.resume``, every state restored from the last complete epoch.

    Under torch.distributed the model is wrapped in DistributedDataParallel after any resume (so every rank
    starts from the same weights). BatchNorm keeps per-process batch statistics, DDP's default and the usual
    choice (torchvision's reference recipe without --sync-bn): each rank normalises its share of the batch.
    """
    cfg, device, checkpoint, size = job.cfg, job.device, job.checkpoint, job.inputs.size
    steps = epoch_steps(cfg.epochs, n_train // cfg.batch_size)  # no ragged last batch: BatchNorm dislikes tiny ones
    model.to(device).to(memory_format=torch.channels_last)  # measured faster on CPU too (39 vs 24 img/s at 112 px)
    opt = finetune_optimizer(cfg, param_groups(model, head, cfg.lr, cfg.weight_decay, cfg.backbone_lr_scale))
    recipe = recipe_of(model, size) | ({"ema": cfg.ema} if cfg.ema else {})
    if frozen := sum(not p.requires_grad for p in model.parameters()):  # another freeze means another optimiser state
        recipe["frozen_tensors"] = frozen
    dist = current()
    loop = Loop(
        opt,
        make_scheduler(cfg, opt, sum(steps)),
        History(),
        0,
        steps,
        model,
        recipe,
        dist,
        make_ema(model, cfg.ema, sum(steps)),
    )
    if job.resume:
        state = load_checkpoint(checkpoint)
        if state.get("recipe", loop.recipe) != loop.recipe:
            raise CheckpointMismatch(
                f"{checkpoint} was written for another network, resolution or freeze ({state['recipe']}, this run: "
                f"{loop.recipe}); resume it with its own run's settings or start a new run with --out"
            )
        model.load_state_dict(state["model"])
        if loop.ema is not None:
            loop.ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        loop.sched.load_state_dict(state["scheduler"])
        loop.history, loop.start_epoch = History(**state["history"]), state["epoch"]
        set_rng_state(state["rng"])
        log(f"[1C] resumed after epoch {loop.start_epoch} of {len(steps)} from {checkpoint}")
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        loop.net = DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None
        )
    return loop


def train_step(
    loop: Loop, xb: torch.Tensor, yb: torch.Tensor, cfg: FinetuneConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a preprocessed batch: (the detached loss, the number of correct predictions)."""
    # bf16 is much slower on these CPUs
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=uses_bf16(xb.device)):
        logits = loop.net(xb)
    loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
    loop.opt.zero_grad(set_to_none=True)
    loss.backward()
    loop.opt.step()
    loop.sched.step()
    if loop.ema is not None:
        loop.ema.update_parameters(loop.net.module if loop.dist.active else loop.net)
    return loss.detach(), (logits.detach().argmax(1) == yb).sum()


def train_epoch(
    loop: Loop,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    epoch: int,
    job: Job,
    on_step: Callable[[int, int], None] | None,
) -> tuple[list[float], int]:
    """One pass over a seeded permutation (shuffling and augmentation drawn from (seed, epoch)): the global
    batch's mean loss per step and the correct count.

    Under torch.distributed every rank draws the same permutation and augments the whole global batch with
    the same generator, then trains on its own contiguous share: the batches, the augmentation and the
    schedule are those of one process, and DDP's mean of the ranks' gradients is the global batch's.
    """
    cfg, inputs, device = job.cfg, job.inputs, job.device
    x, y = train_xy
    dist = loop.dist
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = torch.randperm(len(x), generator=gen)
    mean, std = torch.tensor(inputs.mean, device=device), torch.tensor(inputs.std, device=device)
    mine = dist.shard(cfg.batch_size)
    size = epoch_size(inputs.size, cfg.start_size, epoch, len(loop.epoch_steps))
    flips = alternating_flips(len(x), cfg.seed, epoch) if cfg.flip == "alternate" else None
    losses: list[torch.Tensor] = []
    correct = torch.zeros((), dtype=torch.long, device=device)
    with Progress(
        loop.epoch_steps[epoch] * cfg.batch_size,
        f"epoch {epoch + 1}/{len(loop.epoch_steps)}",
        "img",
        enabled=dist.is_main,
        mininterval=2.0,
    ) as bar:
        for step in range(loop.epoch_steps[epoch]):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = augment(x[idx], cfg.pad, gen, None if flips is None else flips[idx], cfg.pad_mode)
            xb = preprocess(batch[mine].to(device, non_blocking=True), size, mean, std)
            loss, hits = train_step(loop, xb, y[idx][mine].to(device, non_blocking=True), cfg)
            losses.append(loss)
            correct += hits
            if step % 20 == 0:
                value = float(loss)
                if not dist.agree(math.isfinite(value)):  # every rank stops together
                    raise TrainingDiverged(
                        f"the training loss became {value} in epoch {epoch + 1}, step {step}; lower --lr (now"
                        f" {cfg.lr:g})"
                    )
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{loop.opt.param_groups[-1]['lr']:.2g}")
            bar.update(len(idx))
            if on_step is not None:
                on_step(epoch, step)
    step_losses = (dist.all_reduce_sum(torch.stack(losses).float()) / dist.world).cpu().tolist()
    correct = dist.all_reduce_sum(correct)
    if not all(math.isfinite(v) for v in step_losses):  # never checkpoint a diverged model
        raise TrainingDiverged(f"the training loss became non-finite in epoch {epoch + 1}; lower --lr (now {cfg.lr:g})")
    return step_losses, int(correct)


def end_epoch(
    model: nn.Module,
    loop: Loop,
    done: EpochRun,
    val_xy: tuple[torch.Tensor, torch.Tensor],
    job: Job,
    train_x: torch.Tensor,
) -> dict[str, float]:
    """Validate when ``validates`` says so (the moving average, when kept; at ``--test-size``, after recomputing the
    trained layers' batch-norm statistics there from the first of ``train_x``), append the epoch's row to the history
    and write the checkpoint that a resume starts from."""
    cfg, inputs, device, epoch = job.cfg, job.inputs, job.device, done.index
    step_losses, correct, train_seconds = done.step_losses, done.correct, done.seconds
    loop.history.step_loss.extend(step_losses)
    images = loop.epoch_steps[epoch] * cfg.batch_size
    row = {
        "epoch": epoch + 1,
        "train_loss": float(np.mean(step_losses)),
        "train_accuracy": correct / images,
        "train_seconds": train_seconds,
        "train_images_per_second": images / train_seconds,
        "train_size": epoch_size(inputs.size, cfg.start_size, epoch, len(loop.epoch_steps)),
    }
    if validates(cfg, device, epoch):
        row |= validation_row(model if loop.ema is None else loop.ema.module, val_xy, job, train_x)
    loop.history.epochs.append(row)
    if loop.dist.is_main:  # rank 0 alone writes; the others read it on --resume (a shared file system across machines)
        save_checkpoint(job.checkpoint, model, loop, epoch + 1)
    loop.dist.barrier()
    return row


def validates(cfg: FinetuneConfig, device: torch.device, epoch: int) -> bool:
    """Whether ``epoch`` ends with a validation pass: always the last; the others with ``--validation epoch``, or
    ``auto`` on a GPU (on a CPU a pass costs about as much as a tenth of an epoch, and nothing reads it)."""
    every = cfg.validation == "epoch" or (cfg.validation == "auto" and device.type != "cpu")
    return every or epoch == passes(cfg.epochs) - 1


def validation_row(
    evaluated: nn.Module, val_xy: tuple[torch.Tensor, torch.Tensor], job: Job, train_x: torch.Tensor
) -> dict[str, float]:
    """The validation columns of an epoch's row."""
    cfg, inputs, device = job.cfg, job.inputs, job.device
    if job.eval_inputs.size != inputs.size:
        recalibrate_batch_norm(evaluated, train_x[:RECALIBRATION_IMAGES], job.eval_inputs, cfg.batch_size, device)
    val_probs, val_ips, one_view = predict(
        evaluated,
        val_xy[0],
        job.eval_inputs,
        cfg.eval_batch_size,
        "validation",
        Views.of(cfg),
        runtime.choose(cfg.runtime, device),
    )
    return {
        "val_loss": float(F.nll_loss(val_probs.clamp_min(1e-12).log(), val_xy[1])),
        "val_accuracy": float((val_probs.argmax(1) == val_xy[1]).float().mean()),
        "val_images_per_second": val_ips,
        "val_accuracy_one_view": float((one_view.argmax(1) == val_xy[1]).float().mean()),
    }


def train(
    model: nn.Module,
    head: nn.Module,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    val_xy: tuple[torch.Tensor, torch.Tensor],
    job: Job,
    trainable: Sequence[str] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> History:
    """Fine-tune ``model`` (whose new classifier is ``head``) for ``job.cfg.epochs``; a checkpoint after every epoch.

    ``trainable`` names the submodules kept in train mode when only part of the network is trained.
    ``on_step(epoch, step)`` is called after each optimiser step (progress hooks, tests). Under torch.distributed
    every rank calls this with the same data; see ``train_epoch`` and ``start_loop``.
    """
    cfg, checkpoint = job.cfg, job.checkpoint
    check_shards(cfg, len(train_xy[0]), len(val_xy[0]), current().world)
    loop = start_loop(model, head, len(train_xy[0]), job)
    for epoch in range(loop.start_epoch, len(loop.epoch_steps)):
        set_train_mode(model, trainable)
        t0 = time.perf_counter()
        try:
            with depthwise.faster_weight_grads(model, job.device):
                step_losses, correct = train_epoch(loop, train_xy, epoch, job, on_step)
        except KeyboardInterrupt:
            done = (
                f"the last complete checkpoint (after epoch {epoch}) is {checkpoint}"
                if epoch
                else "no epoch had finished, so there is no checkpoint yet"
            )
            raise TrainingInterrupted(
                f"training interrupted in epoch {epoch + 1} of {len(loop.epoch_steps)}; {done}"
            ) from None
        done = EpochRun(epoch, step_losses, correct, time.perf_counter() - t0)
        row = end_epoch(model, loop, done, val_xy, job, train_xy[0])
        val = f"val accuracy {percent(row['val_accuracy'])}" if "val_accuracy" in row else "validated at the end"
        log(
            f"[1C] epoch {epoch + 1}/{len(loop.epoch_steps)}: train loss {row['train_loss']:.4f}, {val},"
            f" {row['train_seconds'] / 60:.1f} min ({row['train_images_per_second']:.0f} img/s)"
        )
    if loop.ema is not None:  # what is evaluated and saved from here on is the average
        model.load_state_dict(loop.ema.module.state_dict())
    return loop.history
