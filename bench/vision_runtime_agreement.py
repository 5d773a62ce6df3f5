"""Claim under test: a fine-tuned network predicts the same classes through every inference runtime as through torch.

Loads the network a fine-tuning run saved (its epoch checkpoint, ``artefacts/finetune_checkpoint.pt``), predicts the
CIFAR-10 test images at the run's resolution through each runtime ``embedlab.vision.runtime`` has here, with the run's
flip test-time augmentation, and prints for each: the share of images whose predicted class equals torch's, the test
accuracy, and images/s (one pass each, in turn; a timing only when nothing else runs).
Usage: python bench/vision_runtime_agreement.py RUN --data-dir DATA [--test-per-class N] [--runtimes torch,onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from embedlab.files import read_torch
from embedlab.vision import runtime
from embedlab.vision.backbones import create_backbone
from embedlab.vision.cifar10 import CLASSES, load_cifar10
from embedlab.vision.features import Inputs
from embedlab.vision.recipe import Views, predict


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--test-per-class", type=int, default=1000)
    ap.add_argument("--runtimes", default=None, help="comma-separated (default: every one available; torch first)")
    args = ap.parse_args()
    cfg = json.loads((args.run / "config.json").read_text())["finetune"]
    size = cfg.get("resolved", {}).get("size") or cfg["size"]
    bb = create_backbone(cfg["backbone"], "none")
    model, _, _ = bb.with_new_head(len(CLASSES))
    model.load_state_dict(read_torch(args.run / "artefacts" / "finetune_checkpoint.pt")["model"])
    model.eval()
    data = load_cifar10(args.data_dir / "cifar-10-batches-py")
    keep = torch.cat([torch.nonzero(data.test_y == c).flatten()[: args.test_per_class] for c in range(len(CLASSES))])
    images, labels = data.test_x[keep], data.test_y[keep]
    inputs = Inputs(size, bb.spec.mean, bb.spec.std)
    preds = {}
    print(
        f"{cfg['backbone']} fine-tuned, {len(keep):,} test images at {size} px, flip TTA, cpu capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    names = args.runtimes.split(",") if args.runtimes else runtime.available("cpu")
    for name in ["torch", *[n for n in names if n != "torch"]]:
        t0 = time.perf_counter()
        probs, _, _ = predict(model, images, inputs, 16, name, Views(flip=True), name)
        seconds = time.perf_counter() - t0
        preds[name] = probs.argmax(1)
        same = float((preds[name] == preds["torch"]).float().mean())
        acc = float((preds[name] == labels).float().mean())
        differ = int((preds[name] != preds["torch"]).sum())
        print(
            f"{name:>12}: same class as torch {100 * same:.2f} % ({differ} differ), "
            f"test accuracy {100 * acc:.2f} %, {2 * len(keep) / seconds:.0f} img/s"
        )


if __name__ == "__main__":
    main()
