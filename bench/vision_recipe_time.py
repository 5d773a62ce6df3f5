"""Question: is the vision part of `embedlab run --profile cpu` with one recipe no slower than with another?

A candidate is ``backbone:K:B``: the backbone, its frozen stages when fine-tuning (``--freeze-stages K``) and its
inference batch (``--batch-size`` of the probe, ``--eval-batch-size`` of fine-tuning). In this process, the
candidates taking turns round after round, it times the three kinds of work the profile does:
- the probe's extraction: forward only at ``--probe-size`` in batches of B;
- fine-tuning: a training step (forward, backward, AdamW; frozen stages in eval mode) at ``--size``, batch 64;
- validation and test: forward only at ``--size`` in batches of B.
Then it weighs them by the profile's image counts (60,000 extracted; 2 x 44,992 trained; 2 epochs x 5,000 validation
images and 10,000 test images, each twice with flip TTA) and prints the estimated minutes and their ratio to the
first candidate's. Random weights on ready tensors: the data path costs the same for every candidate.
Usage: python bench/vision_recipe_time.py [--candidates efficientnet_lite0:0:128,efficientnet_lite1:3:16] [--rounds 3]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _vision import median
from vision_backbones import forward_rate, take_turns, train_rate

#: Images of each kind of work in the cpu profile's vision steps (docs/performance.md, "The recipe's time").
WORK = {"extraction": 60_000, "training": 2 * 44_992, "evaluation": 2 * (2 * 5_000) + 2 * 10_000}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--candidates", default="efficientnet_lite0:0:128,efficientnet_lite1:3:16")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--probe-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2, help="training steps of 64 images per measurement")
    ap.add_argument("--images", type=int, default=256, help="images per inference measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cands = [tuple(c.split(":")) for c in args.candidates.split(",")]
    measures: dict[tuple[str, str], Callable[[], float]] = {}
    for name, k, b in cands:
        key = f"{name}:{k}:{b}"
        batches = max(1, args.images // int(b))
        measures[key, "extraction"] = forward_rate(name, args.probe_size, int(b), batches)
        measures[key, "training"] = train_rate(name, int(k), args.size, 64, args.steps)
        measures[key, "evaluation"] = forward_rate(name, args.size, int(b), batches)
    rates = {k: median(v) for k, v in take_turns(measures, args.rounds).items()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; images/s, then minutes for the cpu profile's"
        " counts"
    )
    print("| candidate | extraction | training | evaluation | minutes (extraction + training + evaluation) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    base = None
    for name, k, b in cands:
        key = f"{name}:{k}:{b}"
        minutes = {w: WORK[w] / rates[key, w] / 60 for w in WORK}
        total = sum(minutes.values())
        base = base or total
        print(
            f"| {key} | {rates[key, 'extraction']:.1f} | {rates[key, 'training']:.1f} | {rates[key, 'evaluation']:.1f}"
            f" | {total:.1f} ({minutes['extraction']:.1f} + {minutes['training']:.1f} + {minutes['evaluation']:.1f}) |"
            f" {total / base:.3f} |"
        )


if __name__ == "__main__":
    main()
