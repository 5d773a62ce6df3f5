"""Claim: feature extraction runs at >= 0.9x the bare backbone forward throughput.

Both are measured in this process, alternating, at the same batch size and resolution: the bare
forward gets pre-resized, pre-normalised random float tensors already in channels_last; the
extraction path gets uint8 32x32 images and does the conversion, resize and normalisation itself.
Usage: python bench/vision_extract.py [--backbone efficientnet_lite0] [--size 128] [--batch 16] [--batches 32]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import time

import torch
from _vision import alternate, median, vision_args

from embedlab.vision.backbones import create_backbone
from embedlab.vision.features import Inputs, extract


def main() -> None:
    args = vision_args(__doc__, size=128, batch=16, count="batches", count_default=32).parse_args()
    bb = create_backbone(args.backbone, args.weights)
    model = bb.feature_extractor().eval().to(memory_format=torch.channels_last)
    n = args.batch * args.batches
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    ready = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)

    def bare() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.batches):
                model(ready)
        return n / (time.perf_counter() - t0)

    def pipeline() -> float:
        _, stats = extract(model, images, Inputs(args.size, bb.spec.mean, bb.spec.std), args.batch)
        return stats.images_per_second

    bm, pm = (median(r) for r in alternate(bare, pipeline, args.rounds))
    print(f"{args.backbone} at {args.size} px, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"bare forward on ready tensors: {bm:.1f} img/s")
    print(f"extraction from uint8 32 px:    {pm:.1f} img/s")
    print(f"ratio extraction / bare = {pm / bm:.3f}  (claim: >= 0.9)")


if __name__ == "__main__":
    main()
