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
    timed: int = 5,
    engine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Images/s of extraction, the basis of the printed time estimate: the median of ``timed`` batches after two
    warm-up batches (the first batches run slower while the kernels and caches warm up, so one batch alone
    underestimates the rate)."""
    warm = images[: 2 * batch]
    extract(model, warm, inputs, batch, device, "warm-up", engine)
    rates = []
    for i in range(timed):
        sample = images[(2 + i) * batch : (3 + i) * batch]
        if len(sample):
            rates.append(extract(model, sample, inputs, batch, device, "timing", engine)[1].images_per_second)
    return (
        float(np.median(rates))
        if rates
        else extract(model, warm, inputs, batch, device, "timing", engine)[1].images_per_second
    )


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
