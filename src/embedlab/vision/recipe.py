"""The fine-tuning recipe's pieces: augmentation (pad-crop and flips), parameter groups with decay on weights only,
the optimiser, warm-up + cosine (or one-cycle), progressive resizing, the weights' moving average, which parts train,
how a global batch is shared, and how an image is predicted (test-time augmentation: mirror images, 1-pixel shifts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from embedlab.config import FinetuneConfig
from embedlab.distributed import current
from embedlab.errors import InputError
from embedlab.vision import runtime
from embedlab.vision.features import Inputs, extract, inference_batch


def augment(
    x: torch.Tensor, pad: int, gen: torch.Generator, flips: torch.Tensor | None = None, pad_mode: str = "zeros"
) -> torch.Tensor:
    """Random crop with ``pad`` pixels of padding (zeros, or the image reflected at its border), then a horizontal
    flip (uint8 NCHW, at 32 px): a random one, or where ``flips`` is given, exactly those (the random draw is still
    made, so the crops do not depend on it).

    Done before the resize, as in the classic CIFAR recipe, so its cost does not grow with the resolution.
    """
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).tolist()
    drawn = torch.rand(n, generator=gen) < 0.5
    flips = (drawn if flips is None else flips).tolist()
    padded = F.pad(x, (pad, pad, pad, pad), mode="constant" if pad_mode == "zeros" else "reflect") if pad else x
    out = torch.empty_like(x)
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        crop = padded[i, :, dy : dy + h, dx : dx + w]
        out[i] = crop.flip(-1) if flip else crop
    return out


def alternating_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of the ``n`` training images to mirror in ``epoch`` under alternating flips (as in Keller Jordan's
    cifar10-airbench): each image's first-epoch flip is drawn once from the seed, and every later epoch flips it
    the other way, so any two consecutive epochs show every image both ways round instead of a coin toss's 50 %."""
    first = torch.rand(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + 999_983)) < 0.5
    return first ^ bool(epoch % 2)


def param_groups(
    model: nn.Module, head: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float
) -> list[dict[str, Any]]:
    """Trainable parameters in up to four groups: (backbone | head) x (decayed | not).

    Norm weights and biases (every parameter with at most one dimension) get no weight decay:
    shrinking them only changes the scale the next layer sees, it does not regularise.
    """
    head_ids = {id(p) for p in head.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in head_ids, p.ndim > 1), []).append(p)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr if is_head else lr * backbone_lr_scale,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'head' if is_head else 'backbone'}{'' if decay else ' (no decay)'}",
            }
        )
    return out


def finetune_optimizer(cfg: FinetuneConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The fine-tuning recipe's optimiser over ``param_groups``' groups (each with its own lr and weight decay):
    AdamW, or SGD with Nesterov momentum. The movie sweep's optimisers are ``movies.train.sweep_optimizer``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr: linear from 1/warmup to 1, then cosine down to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scheduler(
    cfg: FinetuneConfig, opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=[g["lr"] for g in opt.param_groups],
            total_steps=total_steps,
            pct_start=max(cfg.warmup_fraction, 1e-3),
        )
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total_steps, round(cfg.warmup_fraction * total_steps)))


def passes(epochs: float) -> int:
    """How many passes over the training images ``epochs`` starts: a fractional last one counts."""
    return math.ceil(epochs)


def epoch_steps(epochs: float, steps_per_epoch: int) -> list[int]:
    """The optimiser steps of each pass over the training images: whole passes, and with a fractional ``epochs`` a
    last pass that stops after that share of its batches (at least one), as cifar10-airbench trains 9.9 epochs."""
    whole = passes(epochs) - 1
    return [steps_per_epoch] * whole + [max(1, round((epochs - whole) * steps_per_epoch))]


def epoch_size(final: int, start: int | None, epoch: int, epochs: int) -> int:
    """Progressive resizing: the training resolution of ``epoch``, linear from ``start`` to ``final`` (the
    evaluation resolution) over the epochs, rounded to a multiple of 2; ``final`` throughout without ``start``."""
    if start is None or epochs == 1:
        return final
    return 2 * round((start + (final - start) * epoch / (epochs - 1)) / 2)


def train_pixels(final: int, start: int | None, epochs: float, steps_per_epoch: int, batch: int) -> int:
    """The training compute as images x px^2 summed over the epochs: a budget that does not depend on the machine."""
    steps = epoch_steps(epochs, steps_per_epoch)
    return sum(n * batch * epoch_size(final, start, e, len(steps)) ** 2 for e, n in enumerate(steps))


def make_ema(model: nn.Module, fraction: float, total_steps: int) -> AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm statistics, or None when ``fraction`` is 0.

    The decay is 1 - 1 / (fraction x total_steps), so a fraction names the same share of training at any data
    size, warmed up as min(decay, (1 + n) / (10 + n)) after n updates so early weights do not dominate.
    Integer buffers (BatchNorm's batch counter) are copied, not averaged.
    """
    if fraction <= 0:
        return None
    decay = 1.0 - 1.0 / max(1.0, fraction * total_steps)

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def set_train_mode(model: nn.Module, trainable: Sequence[str] | None) -> None:
    """Train mode for the trained parts only: frozen stages keep their BatchNorm statistics."""
    if trainable is None:
        model.train()
        return
    model.eval()
    for name in trainable:
        model.get_submodule(name).train()


#: Validation and test batch on a GPU with --eval-batch-size unset (a CPU gets features.CPU_INFERENCE_BATCH).
EVAL_BATCH_GPU = 256


@dataclass(frozen=True)
class Views:
    """The test-time views an image is predicted under (``tta_views``): with its mirror image, and with ``shifts``
    copies moved one pixel diagonally."""

    flip: bool = False
    shifts: int = 0

    @classmethod
    def of(cls, cfg: FinetuneConfig) -> Views:
        return cls(cfg.tta_flip, cfg.tta_shifts)

    @property
    def passes(self) -> int:
        return (1 + self.flip) * (1 + self.shifts)


def tta_views(images: torch.Tensor, views: Views) -> list[tuple[str, torch.Tensor]]:
    """The test-time ``views`` of uint8 NCHW ``images``, named, the images as they are first: with ``shifts`` 1 also the
    images moved one pixel down and right, with 2 also one pixel up and left (reflected at the border:
    cifar10-airbench's translations), and with ``flip`` the mirror image of each of those: (1 + shifts) x (1 + flip)
    views."""
    out = [("", images)]
    if views.shifts:
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        moved = [(" (moved +1 px)", padded[..., :-2, :-2]), (" (moved -1 px)", padded[..., 2:, 2:])]
        out += moved[: views.shifts]
    if views.flip:
        out += [(f"{name} (mirrored)".replace(") (", ", "), view.flip(-1)) for name, view in out]
    return [(name, view.contiguous()) for name, view in out]


def predict(
    model: nn.Module,
    images: torch.Tensor,
    inputs: Inputs,
    batch_size: int | None,
    desc: str,
    views: Views = Views(),
    runtime_name: str = "torch",
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Softmax probabilities (float32, CPU) of uint8 ``images``, the images/s of one pass (of this rank's share:
    under torch.distributed each rank predicts one block and every rank gets all the rows), and the
    probabilities of the plain images alone. With test-time ``views`` the probabilities are the mean over the
    image's test-time views (``tta_views``, one pass each); without, the two returned tensors are one.
    ``batch_size`` None: the device's default (``inference_batch``). ``runtime_name`` runs every pass
    (``runtime.choose``)."""
    device = next(model.parameters()).device  # where the network is
    batch_size = inference_batch(batch_size, device, EVAL_BATCH_GPU)
    dist = current()
    mine = images[dist.shard(len(images))]
    engine = runtime.engine(runtime_name, model, inputs.size, device)
    probs, speeds = [], []
    for name, view in tta_views(mine, views):
        logits, stats = extract(model, view, inputs, batch_size, device, desc + name, engine)
        probs.append(dist.gather_rows(logits.softmax(1), len(images)))
        speeds.append(stats.images_per_second)
    if len(probs) == 1:
        return probs[0], speeds[0], probs[0]
    return torch.stack(probs).mean(0), speeds[0], probs[0]


def check_shards(cfg: FinetuneConfig, n_train: int, n_val: int, world: int) -> None:
    """Every one of ``world`` processes must get an equal, non-empty share of each global batch (so that DDP's mean of
    the ranks' gradients is the gradient of the global batch) and of the validation images."""
    if n_train // cfg.batch_size == 0:
        raise InputError(
            f"batch size {cfg.batch_size} is larger than the {n_train} training images; lower --batch-size"
        )
    if world > 1 and (cfg.batch_size % world or n_val < world):
        raise InputError(
            f"{world} processes cannot share a global batch of {cfg.batch_size} images equally (or the {n_val} "
            "validation images); use a --batch-size divisible by the number of processes (--nproc-per-node x nodes)"
        )
