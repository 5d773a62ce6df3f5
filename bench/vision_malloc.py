"""Claim under test: keeping freed memory in the process (``embedlab.allocator.keep_freed_memory``, what the command
line does at start) makes the fine-tuning step faster and the extraction no slower.

An allocator setting holds for a whole process, so each measurement is a child process of its own, the two settings
taking turns: glibc's defaults, then freed memory kept, ``--rounds`` times. A child runs the product's training loop
(``finetune.train``: the `cpu` recipe's network, freeze and channels_last, pad-crop and flips, AdamW) for ``--steps``
steps after one untimed step, then the product's ``extract`` through torch and ONNX Runtime. Printed: the medians and
the ratio kept / defaults.
Usage: python bench/vision_malloc.py [--backbone efficientnet_lite1] [--size 112] [--batch 64] [--steps 6]
[--rounds 3] [--extract-size 128] [--images 256]   (run with nothing else busy on the machine)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _vision import median, vision_args


def child(args) -> dict[str, float]:
    import torch

    from embedlab.allocator import keep_freed_memory
    from embedlab.config import FinetuneConfig
    from embedlab.vision import runtime
    from embedlab.vision.backbones import create_backbone
    from embedlab.vision.features import Inputs, extract
    from embedlab.vision.finetune import Job, train

    if args.child == "kept":
        assert keep_freed_memory()
    bb = create_backbone(args.backbone, args.weights)
    model, head, trained = bb.with_new_head(10, "all", bb.spec.cpu_freeze_stages)
    g = torch.Generator().manual_seed(0)
    n = args.batch * (args.steps + 1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    cfg = FinetuneConfig(batch_size=args.batch, epochs=1, eval_batch_size=16, tta_flip=False, runtime="torch")
    stamps: list[float] = []
    train(
        model,
        head,
        (images, labels),
        (images[:16], labels[:16]),
        Job(cfg, Inputs(args.size, bb.spec.mean, bb.spec.std), torch.device("cpu"), Path(tempfile.mkdtemp()) / "c.pt"),
        trained,
        on_step=lambda e, s: stamps.append(time.perf_counter()),
    )
    out = {"training step": (len(stamps) - 1) * args.batch / (stamps[-1] - stamps[0])}
    features = bb.feature_extractor().eval()
    inputs = Inputs(args.extract_size, bb.spec.mean, bb.spec.std)
    for name in ("torch", "onnxruntime"):
        engine = runtime.engine(name, features, args.extract_size, "cpu")
        extract(features, images[:32], inputs, 16, "cpu", desc=name, engine=engine)  # warm-up
        t0 = time.perf_counter()
        extract(features, images[: args.images], inputs, 16, "cpu", desc=name, engine=engine)
        out[f"extraction, {name}"] = args.images / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = vision_args(__doc__, size=112, batch=64, count="steps", count_default=6)
    ap.set_defaults(backbone="efficientnet_lite1")
    ap.add_argument("--extract-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--child", choices=("defaults", "kept"), help="(internal) one measurement")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    runs: dict[str, list[dict[str, float]]] = {"defaults": [], "kept": []}
    for _ in range(args.rounds):
        for setting in runs:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", setting]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"{args.backbone}: training batch {args.batch} at {args.size} px, extraction batch 16 at {args.extract_size} px"
    )
    print(
        f"{'img/s (median of ' + str(args.rounds) + ' processes each)':44s} {'defaults':>9s} {'kept':>9s} {'ratio':>7s}"
    )
    for what in runs["defaults"][0]:
        a, b = (median([r[what] for r in runs[s]]) for s in runs)
        print(f"{what:44s} {a:9.1f} {b:9.1f} {b / a:7.3f}")


if __name__ == "__main__":
    main()
