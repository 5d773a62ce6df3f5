"""Claim: the fine-tuning loop trains at >= 0.8x the bare forward+backward+step throughput.

Both are measured in this process, alternating, on the same model at the same batch size and
resolution. The bare step gets a pre-resized, pre-normalised random float batch already in
channels_last and does forward, cross-entropy, backward and an SGD step. The loop (``finetune.train``)
gets uint8 32 px images and does everything a real epoch does: shuffling, pad-crop + flip,
resize, normalisation, the label-smoothed loss, parameter groups, the scheduler and loss logging.
Only the optimiser steps are timed (from the second step on), not the end-of-epoch validation.
Usage: python bench/vision_train.py [--backbone efficientnet_lite0] [--size 96] [--batch 64] [--steps 8]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _vision import alternate, median, vision_args

from embedlab.config import FinetuneConfig
from embedlab.vision.backbones import create_backbone
from embedlab.vision.finetune import Inputs, Job, train


def main() -> None:
    args = vision_args(__doc__, size=96, batch=64, count="steps", count_default=8).parse_args()
    bb = create_backbone(args.backbone, args.weights)
    model, head, _ = bb.with_new_head(10)
    model = model.to(memory_format=torch.channels_last).train()
    n = args.batch * (args.steps + 1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    ready = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    ready_y = labels[: args.batch]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    cfg = FinetuneConfig(batch_size=args.batch, epochs=1, lr=1e-3, eval_batch_size=args.batch)
    inputs = Inputs(args.size, bb.spec.mean, bb.spec.std)
    tmp = Path(tempfile.mkdtemp())

    def bare() -> float:
        def step() -> None:
            loss = F.cross_entropy(model(ready), ready_y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        return args.steps * args.batch / (time.perf_counter() - t0)

    def loop() -> float:
        stamps: list[float] = []
        train(
            model,
            head,
            (images, labels),
            (images[: args.batch], labels[: args.batch]),
            Job(cfg, inputs, torch.device("cpu"), tmp / "ck.pt"),
            on_step=lambda e, s: stamps.append(time.perf_counter()),
        )
        return (len(stamps) - 1) * args.batch / (stamps[-1] - stamps[0])

    bm, pm = (median(r) for r in alternate(bare, loop, args.rounds))
    print(f"{args.backbone} at {args.size} px, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"bare forward+backward+step on ready tensors: {bm:.1f} img/s")
    print(f"fine-tuning loop from uint8 32 px:           {pm:.1f} img/s")
    print(f"ratio loop / bare = {pm / bm:.3f}  (claim: >= 0.8)")


if __name__ == "__main__":
    main()
