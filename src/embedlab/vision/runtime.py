"""Inference runtimes: every pass that only predicts (the probe's frozen extraction, fine-tuning's validation and test
passes, every view) runs through the fastest runtime the machine has, torch being the fallback.

A runtime is a name and a function from one preprocessed batch (float32, NCHW) to the network's outputs. ``choose``
turns ``--runtime auto`` into one by what the machine has; the choice is measured, per machine kind, by
``bench/vision_runtimes.py`` (docs/performance.md). The feature cache key names the runtime and its precision
(``tag``), so features computed one way are never served for another.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from embedlab.config import RUNTIME_NAMES
from embedlab.errors import InputError

#: The runtimes by name (``config.RUNTIME_NAMES`` less "auto"), with the precision each computes in.
RUNTIMES = {"torch": "fp32", "torch-bf16": "bf16", "onnxruntime": "fp32", "openvino": "fp32"}

#: ``--runtime auto`` on a CPU, the first of these installed (bench/vision_runtimes.py, docs/performance.md): OpenVINO,
#: 1.7-2.0x torch fp32 on both kinds measured (1.10x ONNX Runtime on AVX-512, 1.23-1.36x on the AVX2-class kind),
#: built in about 4 s; then ONNX Runtime, 1.4-1.6x torch, built in about 1.5 s. torch-bf16 (2.0x with avx512_bf16)
#: moves outputs by 5 % of their scale, so it is never chosen by itself.
AUTO = ("openvino", "onnxruntime")

Engine = Callable[[torch.Tensor], torch.Tensor]

LOGGER = logging.getLogger(__name__)


@functools.cache
def cpu_bf16() -> str | None:
    """The CPU's bf16 instructions, as /proc/cpuinfo names them ("amx_bf16", "avx512_bf16"), or None."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available(device: torch.device | str) -> list[str]:
    """The runtimes that can run on ``device``: torch everywhere; on a CPU also torch under bf16 autocast where the CPU
    has bf16 instructions, and ONNX Runtime and OpenVINO where installed."""
    if torch.device(device).type != "cpu":
        return ["torch"]
    names = ["torch"]
    if cpu_bf16():
        names.append("torch-bf16")
    names += [n for n in ("onnxruntime", "openvino") if _importable(n)]
    return names


def choose(requested: str, device: torch.device | str) -> str:
    """``--runtime``: a named runtime must be available here; ``auto`` is the first of ``AUTO`` installed on a CPU,
    else torch."""
    assert requested in RUNTIME_NAMES, requested
    have = available(device)
    if requested == "auto":
        return next((name for name in AUTO if name in have), "torch")
    if requested not in have:
        why = (
            "it runs on a CPU only"
            if torch.device(device).type != "cpu"
            else ("this CPU has no bf16 instructions" if requested == "torch-bf16" else f"pip install {requested}")
        )
        raise InputError(f"--runtime {requested} is not available here ({why}); use --runtime auto or torch")
    return requested


def tag(name: str) -> str:
    """The runtime and its precision, as the feature cache key names them."""
    return name if name.endswith(RUNTIMES[name]) else f"{name}-{RUNTIMES[name]}"


def engine(name: str, model: nn.Module, size: int, device: torch.device | str) -> Engine:
    """``model`` (in eval mode, frozen for the engine's life) as a function of one batch of ``size`` px inputs."""
    model = model.eval()
    if name == "torch":
        return model
    if name == "torch-bf16":

        def bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).float()

        return bf16
    if name == "onnxruntime":
        return _onnxruntime(model, size)
    if name == "openvino":
        return _openvino(model, size)
    raise ValueError(f"unknown runtime {name!r}")


def _onnx_bytes(model: nn.Module, size: int) -> bytes:
    """``model`` exported to ONNX with a free batch dimension (torch's TorchScript-based exporter)."""
    buffer = io.BytesIO()
    example = torch.zeros(2, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are for torch's developers, not the user
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )
    return buffer.getvalue()


def _onnxruntime(model: nn.Module, size: int) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its notes on graph optimisations are not for the user
    compiled = ort.InferenceSession(_onnx_bytes(model, size), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(compiled.run(None, {"x": x.contiguous().numpy()})[0])

    return run


def _openvino(model: nn.Module, size: int) -> Engine:
    import openvino as ov

    core = ov.Core()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notes
        converted = ov.convert_model(model, example_input=torch.zeros(2, 3, size, size))
    compiled = core.compile_model(
        converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    )

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(compiled(x.contiguous().numpy())[0].copy())

    return run
