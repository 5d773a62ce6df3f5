"""Claim under test: which inference runtime runs the frozen extraction and the evaluation passes fastest on this
machine, with the same numbers.

Each runtime embedlab can use (``embedlab.vision.runtime``: torch fp32, torch under bf16 autocast where the CPU has
bf16 instructions, ONNX Runtime, OpenVINO where installed) runs the same network on the same batches, in one process,
taking turns, through the same ``extract`` call the product makes. Printed per runtime: images/s, the ratio to torch
fp32, and the largest output difference relative to the outputs' scale.
Usage: python bench/vision_runtimes.py [--backbone efficientnet_lite1] [--size 128] [--batch 16] [--batches 8]
[--rounds 3] [--head]   (--head: the whole classifier, as fine-tuning's evaluation runs it; default: the features)
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import time

import torch
from _vision import median, vision_args

from embedlab.vision import runtime
from embedlab.vision.backbones import create_backbone
from embedlab.vision.features import Inputs, extract


def main() -> None:
    args = vision_args(__doc__, size=128, batch=16, count="batches", count_default=8)
    args.set_defaults(backbone="efficientnet_lite1")
    args.add_argument("--head", action="store_true")
    args = args.parse_args()
    bb = create_backbone(args.backbone, args.weights)
    model = (bb.with_new_head(10)[0] if args.head else bb.feature_extractor()).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batches * args.batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    inputs = Inputs(args.size, bb.spec.mean, bb.spec.std)
    names = [n for n in runtime.available("cpu")]
    engines, build = {}, {}
    for n in names:
        t0 = time.perf_counter()
        engines[n] = runtime.engine(n, model, args.size, "cpu")
        build[n] = time.perf_counter() - t0

    def timed(name: str) -> tuple[float, torch.Tensor]:
        t0 = time.perf_counter()
        out, _ = extract(model, images, inputs, args.batch, "cpu", desc=name, engine=engines[name])
        return len(images) / (time.perf_counter() - t0), out

    outs = {n: timed(n)[1] for n in names}  # warm-up, and the outputs compared
    speeds: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            speeds[n].append(timed(n)[0])
    ref = outs["torch"]
    print(
        f"{args.backbone} {'classifier' if args.head else 'features'} at {args.size} px, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"bf16 instructions: {runtime.cpu_bf16() or 'none'}"
    )
    base = median(speeds["torch"])
    for n in names:
        diff = float((outs[n] - ref).abs().max() / ref.abs().max())
        agree = ""
        if args.head:
            agree = f", same class {float((outs[n].argmax(1) == ref.argmax(1)).float().mean()):.4f}"
        print(
            f"{n:>24}: {median(speeds[n]):7.1f} img/s, ratio {median(speeds[n]) / base:.3f} "
            f"(rounds {', '.join(f'{x:.1f}' for x in speeds[n])}); built in {build[n]:.1f} s; "
            f"largest difference {diff:.1e}{agree}"
        )


if __name__ == "__main__":
    main()
