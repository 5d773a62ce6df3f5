"""Question: which batch size makes inference (the probe's extraction, validation and test) fastest on this CPU?

Small batches keep a layer's activations in the CPU's cache; large ones stream them through memory. Every
candidate runs the real extraction path (uint8 32 px -> resize -> normalise -> frozen forward, ``extract``) on
the same images, candidates taking turns round after round in this process, so machine noise hits all alike.
Prints images/s, the ratio to the first candidate (128, the default before this benchmark), and whether the
features equal the first candidate's bit for bit (then the feature cache stays valid across batch sizes).
Usage: python bench/vision_inference_batch.py [--backbone efficientnet_lite1] [--size 128] [--images 512]
       [--candidates 128,64,32,16,8] [--rounds 3]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse

import torch
from _vision import median

from embedlab.vision.backbones import create_backbone
from embedlab.vision.features import Inputs, extract


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite1")
    ap.add_argument("--weights", default="none", help="weights do not change the speed; 'none' needs no files")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--candidates", default="128,64,32,16,8")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bb = create_backbone(args.backbone, args.weights)
    model = bb.feature_extractor()
    images = torch.randint(
        0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    batches = [int(b) for b in args.candidates.split(",")]
    rates: dict[int, list[float]] = {b: [] for b in batches}
    feats: dict[int, torch.Tensor] = {}
    for r in range(args.rounds + 1):  # round 0 warms up, untimed
        for b in batches:
            f, stats = extract(model, images, Inputs(args.size, bb.spec.mean, bb.spec.std), b)
            feats[b] = f
            if r:
                rates[b].append(stats.images_per_second)
    base = median(rates[batches[0]])
    print(f"{args.backbone} at {args.size} px, {args.images} images, torch threads {torch.get_num_threads()}")
    print("| batch | images/s | ratio | features equal |\n|---:|---:|---:|---|")
    for b in batches:
        same = torch.equal(feats[b], feats[batches[0]])
        print(f"| {b} | {median(rates[b]):.1f} | {median(rates[b]) / base:.3f} | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
