"""Claim under test: ONNX Runtime extracts the frozen features faster than torch on these CPUs, with the same features.

The recipe's extraction (EfficientNet-Lite1 without its head, channels_last, batch 16 at 128 px) exported once with
torch.onnx and run by onnxruntime's CPU provider, against torch in inference mode, in one process, taking turns on the
same batches. Printed: images/s of each, the ratio, and the largest feature difference relative to the features' scale.
Needs `pip install onnxruntime onnx onnxscript` (not embedlab dependencies).
Usage: python bench/vision_onnxruntime.py [--backbone efficientnet_lite1] [--size 128] [--batch 16] [--batches 8]
[--rounds 3]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _vision import alternate, median, vision_args

from embedlab.vision.backbones import create_backbone


def main() -> None:
    args = vision_args(__doc__, size=128, batch=16, count="batches", count_default=8)
    args.set_defaults(backbone="efficientnet_lite1")
    args = args.parse_args()
    model = create_backbone(args.backbone, args.weights).feature_extractor().eval()
    batches = [torch.randn(args.batch, 3, args.size, args.size) for _ in range(args.batches)]
    path = Path(tempfile.mkdtemp()) / "features.onnx"
    torch.onnx.export(
        model,
        (batches[0],),
        str(path),
        input_names=["x"],
        output_names=["f"],
        dynamic_axes={"x": {0: "n"}, "f": {0: "n"}},
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    channels_last = model.to(memory_format=torch.channels_last)

    def with_torch() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                channels_last(x.contiguous(memory_format=torch.channels_last))
        return len(batches) * args.batch / (time.perf_counter() - t0)

    def with_ort() -> float:
        t0 = time.perf_counter()
        for x in batches:
            session.run(None, {"x": x.numpy()})
        return len(batches) * args.batch / (time.perf_counter() - t0)

    with torch.inference_mode():
        ref = channels_last(batches[0].contiguous(memory_format=torch.channels_last)).numpy()
    got = session.run(None, {"x": batches[0].numpy()})[0]
    diff = float(np.abs(got - ref).max() / np.abs(ref).max())
    a, b = alternate(with_torch, with_ort, args.rounds)
    print(
        f"{args.backbone} at {args.size} px, batch {args.batch}, {torch.get_num_threads()} threads, onnxruntime"
        f" {ort.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"torch {median(a):.1f} img/s, onnxruntime {median(b):.1f} img/s: ratio {median(b) / median(a):.3f} "
        f"(rounds: torch {', '.join(f'{x:.1f}' for x in a)}; onnxruntime {', '.join(f'{x:.1f}' for x in b)}); "
        f"largest feature difference {diff:.2e} of the largest feature"
    )


if __name__ == "__main__":
    main()
