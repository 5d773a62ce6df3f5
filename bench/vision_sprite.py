"""Claim: the Part 1 explorer's sprite as lossless WebP is smaller than as PNG, at a cost of well under a second.

Encodes the images a run folder's explorer stores (artefacts/*_view_images.npz, united as report.html does) as one
sprite in each format and prints the size and encoding time of each, and the ratios against PNG.
Usage: python bench/vision_sprite.py RUN
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from embedlab.report.vision_explorer import sprite_grid, sprite_webp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    images = {}
    for name in ("probe", "finetune"):
        path = args.run / "artefacts" / f"{name}_view_images.npz"
        if path.is_file():
            with np.load(path) as z:
                images.update(zip(z["test_index"].tolist(), z["images"]))
    stack = np.stack([images[t] for t in sorted(images)])
    grid = sprite_grid(stack)

    def png() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, "PNG", optimize=True)
        return buf.getvalue()

    print(f"{len(stack):,} images, {stack.nbytes / 1e6:.2f} MB raw")
    base = None
    for label, encode in (("PNG (optimize)", png), ("WebP lossless (used)", lambda: sprite_webp(stack))):
        t = time.perf_counter()
        size = len(encode())
        seconds = time.perf_counter() - t
        base = base or size
        print(f"{label:22s} {size / 1e6:6.2f} MB  {seconds:5.2f} s  size / PNG {size / base:.3f}")


if __name__ == "__main__":
    main()
