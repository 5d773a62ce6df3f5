"""Claim under test: averaging a fine-tuned network's predictions over 1-pixel translations as well as mirror images
(cifar10-airbench's test-time augmentation) raises its accuracy over the mirror images alone.

Reads the fine-tuned network of each finished run folder (``embedlab.Classifier.from_run``, which predicts as the run's
own test did: the mirror-image average) and predicts the run's validation images (or its test images) as they are and
shifted one pixel diagonally either way (reflected at the border); prints the accuracy of each set of views. The views
are paired on the same images, so differences between them are far less noisy than between two training runs.
Usage: python bench/vision_tta.py RUN [RUN ...] [--split val|test]   (time: 6 passes over 5,000 or 10,000 images)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from embedlab.config import FinetuneConfig
from embedlab.store import Store
from embedlab.vision.classifier import Classifier
from embedlab.vision.steps import load_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--split", choices=("val", "test"), default="val")
    args = ap.parse_args()
    for run in args.runs:
        store = Store.open(run)
        data, _, val_idx, test_idx = load_splits(store.typed_config(FinetuneConfig, "finetune"))
        if args.split == "val":
            x, y = data.train_x[val_idx], data.train_y[val_idx]
        else:
            x, y = data.test_x[test_idx], data.test_y[test_idx]
        clf = Classifier.from_store(store, "finetuned")

        def probs(images: torch.Tensor) -> torch.Tensor:  # the mirror-image average, as the run's test predicts
            return torch.as_tensor(clf.predict_proba(images.contiguous()))

        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        plain, one, other = probs(x), probs(padded[:, :, :-2, :-2]), probs(padded[:, :, 2:, 2:])
        views = {
            "mirror (2 views)": plain,
            "+ one diagonal shift (4 views)": (plain + one) / 2,
            "+ both diagonal shifts, airbench's weights 1/2, 1/4, 1/4 (6 views)": plain / 2 + (one + other) / 4,
            "+ both diagonal shifts, equal weights (6 views)": (plain + one + other) / 3,
        }
        print(f"{run} ({args.split}, {len(y):,} images):")
        for name, p in views.items():
            print(f"  {name:<68} {float((p.argmax(1) == y).float().mean()):.2%}")


if __name__ == "__main__":
    main()
