"""Claim under test: the probe's printed extraction estimate (``timing.measure_throughput``: two warm-up batches, then
the images of the batches timed over a few seconds by their time) comes closer to the rate a long extraction then runs
at than five timed batches alone (``--seconds 0``, about half a second of work).

Each row runs in a fresh process, as the main job does: the estimate timed for that many seconds, then a long
extraction of ``--images`` images in the same process, through the product's engine (``--runtime``). Printed per row:
the estimate, the long extraction's rate and their ratio (1 = exact).
Usage: python bench/vision_estimate.py [--weights imagenet] [--runtime openvino] [--seconds 0,3,0,3] [--images 3000]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import subprocess
import sys

import torch
from _vision import vision_args

from embedlab.vision import runtime
from embedlab.vision.backbones import create_backbone
from embedlab.vision.features import extract
from embedlab.vision.finetune import Inputs
from embedlab.vision.timing import measure_throughput


def one(args) -> None:
    bb = create_backbone(args.backbone, args.weights)
    model = bb.feature_extractor()
    engine = runtime.engine(args.runtime, model, args.size, "cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    inputs = Inputs(args.size, bb.spec.mean, bb.spec.std)
    estimate = measure_throughput(model, images, inputs, args.batch, "cpu", engine, seconds=args.one)
    _, long = extract(model, images, inputs, args.batch, "cpu", "long extraction", engine)
    rate = long.images_per_second
    print(f"  timed {args.one:g} s: estimate {estimate:7.1f} img/s, long extraction {rate:7.1f} img/s,", end="")
    print(f" ratio {estimate / rate:.2f}", flush=True)


def main() -> None:
    ap = vision_args(__doc__, size=128, batch=16, count="images", count_default=3000)
    ap.set_defaults(backbone="efficientnet_lite1")
    ap.add_argument("--runtime", default="openvino", choices=["torch", "onnxruntime", "openvino"])
    ap.add_argument("--seconds", default="0,3,0,3,0,3", help="timing lengths, one fresh process each")
    ap.add_argument("--one", type=float, help="(internal) measure this one timing length in this process")
    args = ap.parse_args()
    if args.one is not None:
        return one(args)
    print(f"{args.backbone} features at {args.size} px through {args.runtime}, {torch.get_num_threads()} threads")
    same = ["--backbone", args.backbone, "--weights", args.weights, "--runtime", args.runtime, "--size", str(args.size)]
    same += ["--batch", str(args.batch), "--images", str(args.images)]
    for seconds in args.seconds.split(","):
        subprocess.run([sys.executable, __file__, *same, "--one", seconds], check=True)


if __name__ == "__main__":
    main()
