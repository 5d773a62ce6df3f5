"""Frozen feature extraction: uint8 batches resized on the fly as tensor ops, cached on disk.

The cache key holds everything that changes the features (backbone, weights digest, resolution,
split and the exact image indices), so re-running a probe or re-drawing galleries never
re-extracts, and a changed setting never reads stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embedlab.errors import InputError
from embedlab.files import UnreadableFile, read_torch, torch_bytes, write_atomic
from embedlab.logs import Progress

CACHE_ENV = "EMBEDLAB_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$EMBEDLAB_CACHE_DIR`` or ``~/.cache/embedlab``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "embedlab")


def pick_device(requested: str = "auto") -> torch.device:
    """cuda > mps > cpu, unless a device is named."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def preprocess(x_uint8: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float, resized (bilinear) to ``size``, normalised, channels_last."""
    x = x_uint8.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class ExtractStats:
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class Inputs:
    """How images become network input: resolution and the backbone's normalisation."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def extract(
    model: nn.Module,
    images: torch.Tensor,
    inputs: Inputs,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    desc: str = "features",
    engine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, ExtractStats]:
    """Features (N, D) float32 of uint8 ``images`` through the frozen ``model`` in eval mode, resized and normalised as
    ``inputs`` says; through ``engine`` (``runtime.engine``: the same network in an inference runtime) when given."""
    size, mean, std = inputs.size, inputs.mean, inputs.std
    device = torch.device(device)
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    m = torch.tensor(mean, device=device)
    s = torch.tensor(std, device=device)
    use_bf16 = uses_bf16(device)
    feats: torch.Tensor | None = None  # filled batch by batch: no small blocks kept between the batches' large ones
    start = time.perf_counter()
    with torch.inference_mode(), Progress(len(images), desc, "img", mininterval=2.0) as bar:
        for i in range(0, len(images), batch_size):
            xb = preprocess(images[i : i + batch_size].to(device, non_blocking=True), size, m, s)
            if engine is not None:
                fb = engine(xb)
            else:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    fb = model(xb)
            fb = fb.float().flatten(1)
            if feats is None:
                feats = torch.empty(len(images), fb.shape[1])
            feats[i : i + len(fb)] = fb.cpu()
            bar.update(len(xb))
    feats = feats if feats is not None else torch.empty(0)
    return feats, ExtractStats(len(images), time.perf_counter() - start)


#: Inference batch on a CPU: small batches keep a layer's activations in the cache. Measured with
#: bench/vision_inference_batch.py (docs/performance.md): 1.9x the images/s of batch 128 for efficientnet_lite1 at 128
#: px, 2.0x of
#: batch 256 at 112 px, and the features equal bit for bit, so cached features stay valid across batch sizes.
CPU_INFERENCE_BATCH = 16

#: The probe's extraction batch on a GPU with --batch-size unset (fine-tuning's evaluation uses
#: finetune.EVAL_BATCH_GPU).
EXTRACT_BATCH_GPU = 128


def inference_batch(requested: int | None, device: torch.device, accelerator_default: int) -> int:
    """The batch for extraction and evaluation: ``requested`` when given, else small on a CPU, large on a GPU."""
    if requested is not None:
        return requested
    return CPU_INFERENCE_BATCH if torch.device(device).type == "cpu" else accelerator_default


#: Bump when ``preprocess`` changes: features computed the old way are then never served from a cache.
PREPROCESS_VERSION = "bilinear-aa-v1"


def uses_bf16(device: torch.device) -> bool:
    """Extraction and training run under bf16 autocast on CUDA, in fp32 elsewhere (bf16 is much slower on these
    CPUs)."""
    return torch.device(device).type == "cuda"


def numerics(device: torch.device, runtime: str = "torch") -> str:
    """What besides the inputs decides the feature values: device type, the runtime and its precision (``--runtime``),
    preprocessing."""
    device = torch.device(device)
    precision = "bf16" if uses_bf16(device) or runtime.endswith("-bf16") else "fp32"
    return f"{device.type}-{runtime.removesuffix('-bf16')}-{precision}-{PREPROCESS_VERSION}"


def cache_key(
    backbone: str, weights_digest: str, size: int, split: str, indices: torch.Tensor | None, numerics_tag: str
) -> str:
    """File name of one cached feature matrix: a shared cache never serves features computed with other numerics."""
    sel = "all" if indices is None else hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:10]
    return f"{backbone}-{weights_digest}-{size}px-{numerics_tag}-{split}-{sel}.pt"


#: Peak memory of one batch per pixel of its images: the least of resnet18 and efficientnet_lite1/2 measured at 128 and
#: 224 px in fp32 on a CPU (inference 150-410 bytes, a training step with its saved activations 740-2380 bytes). The
#: smallest, so that a batch refused for its size could not have fitted under any backbone (bf16 on CUDA halves it).
BYTES_PER_PIXEL = {"inference": 150, "training": 740}


def check_batch_fits(
    flag: str, batch: int, size: int, kind: str, device: torch.device, available: int | None = None
) -> None:
    """Refuse, before any data is loaded, a batch whose activations would not fit in the device's free memory."""
    from embedlab.data import available_memory

    need = batch * size * size * BYTES_PER_PIXEL[kind] // (2 if uses_bf16(torch.device(device)) else 1)
    if available is not None:
        have = available
    elif torch.device(device).type == "cuda":
        have = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        have = available_memory()
    if need > have:
        raise InputError(
            f"{flag} {batch} at {size} px needs at least {need / 1024**3:.1f} GiB for its {kind} activations but "
            f"{have / 1024**3:.1f} GiB are free on {device}; use a smaller {flag}"
        )


def usable_cache_dir(cache_dir: Path) -> Path:
    """``cache_dir`` once its features/ folder exists and can be written; checked before any extraction."""
    folder = Path(cache_dir) / "features"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f"cannot use the feature cache {cache_dir}: {exc.strerror or exc} ({exc.filename}); point --cache-dir "
            "(or $EMBEDLAB_CACHE_DIR) at a writable folder"
        ) from None
    return Path(cache_dir)


def cached_features(
    cache_dir: Path,
    key: str,
    compute: "callable[[], tuple[torch.Tensor, ExtractStats]]",
) -> tuple[torch.Tensor, ExtractStats | None, Path]:
    """Load ``key`` from the cache, or compute, save atomically and return it (stats None when cached).

    A damaged entry (cut short, replaced, not a tensor) is a cache miss: it is computed again and replaced,
    with a warning. The side file of extraction times is written after the features, so it never describes
    features that are not there.
    """
    path = Path(cache_dir) / "features" / key
    if path.is_file():
        feats = _load_entry(path)
        if feats is not None:
            return feats, None, path
    feats, stats = compute()
    usable_cache_dir(cache_dir)
    write_atomic(path, torch_bytes(feats))
    if stats is not None:  # kept beside the features, so a cached run can still report what extraction cost
        write_atomic(path.with_suffix(".json"), json.dumps({"images": stats.images, "seconds": stats.seconds}))
    return feats, stats, path


def _load_entry(path: Path) -> torch.Tensor | None:
    """The cached feature matrix, or None (with a warning) when the file is damaged."""
    try:
        feats = read_torch(path)
    except UnreadableFile as exc:  # a cut or replaced entry: recompute it
        reason = str(exc)
    else:
        if isinstance(feats, torch.Tensor) and feats.dim() == 2 and feats.is_floating_point():
            return feats
        reason = f"it holds {type(feats).__name__}, not a feature matrix"
    logging.getLogger(__name__).warning(
        "embedlab: warning: the cached features %s are damaged (%s); computing them again", path, reason
    )
    return None


def cached_stats(path: Path) -> ExtractStats | None:
    """The extraction time recorded when ``path`` was computed (None when it was not kept or is damaged)."""
    side = Path(path).with_suffix(".json")
    try:
        d = json.loads(side.read_text())
        return ExtractStats(int(d["images"]), float(d["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
