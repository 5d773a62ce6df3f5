"""The rates behind the printed time estimates: extraction and training images/s measured before the work starts."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch

from embedlab.config import FinetuneConfig
from embedlab.vision import depthwise
from embedlab.vision.features import extract, uses_bf16
from embedlab.vision.finetune import Inputs
from embedlab.vision.recipe import Views, train_pixels


def measure_throughput(
    model: torch.nn.Module,
    images: torch.Tensor,
    inputs: Inputs,
    batch: int,
    device: torch.device,
    engine: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    seconds: float,
) -> float:
    """Images/s of extraction, the basis of the printed time estimate: after two warm-up batches, the images of the
    batches timed over ``seconds`` (five at least) by their time: a CPU's rate moves from one half second to the
    next, and the median of five batches came out at 0.77-0.98 of the long extraction's rate (docs/performance.md,
    "The printed estimates")."""
    extract(model, images[: 2 * batch], inputs, batch, device, "warm-up", engine)
    pool = images[2 * batch :] if len(images) > 2 * batch else images
    n_batches = -(-len(pool) // batch)
    timed, done, spent = 0, 0, 0.0
    while timed < 5 or spent < seconds:
        i = timed % n_batches
        stats = extract(model, pool[i * batch : (i + 1) * batch], inputs, batch, device, "timing", engine)[1]
        timed, done, spent = timed + 1, done + stats.images, spent + stats.seconds
    return done / spent if spent > 0 else float("nan")


def measure_train_throughput(
    model: torch.nn.Module, batch: int, size: int, device: torch.device, steps: int = 5, warmup: int = 2
) -> float:
    """Images/s of forward + backward on random input, on a copy (the real model's BatchNorm stats stay untouched):
    the median of ``steps`` steps after ``warmup`` (single steps vary by 2x; docs/performance.md, "The printed
    estimates")."""
    probe_model = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    seconds = []
    with (
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device)),
        depthwise.faster_weight_grads(probe_model, device),
    ):
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            probe_model(x).float().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                seconds.append(time.perf_counter() - t0)
    return batch / float(np.median(seconds))


def expected_time(
    cfg: FinetuneConfig,
    model: torch.nn.Module,
    size: int,
    device: torch.device,
    images_per_epoch: int,
    eval_images: int,
) -> tuple[float, float]:
    """(measured training images/s, expected seconds for training and evaluation): inference runs ~2.5x a training step,
    and test-time augmentation evaluates every image once per view."""
    ips = measure_train_throughput(model, cfg.batch_size, size, device)
    passes = Views.of(cfg).passes
    train = train_pixels(size, cfg.start_size, cfg.epochs, images_per_epoch // cfg.batch_size, cfg.batch_size)
    return ips, train / size**2 / ips + passes * eval_images / (2.5 * ips)


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
