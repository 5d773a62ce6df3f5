"""The Part 1 explorer inside report.html: both confusion matrices clickable, the images of each cell, what
fine-tuning fixed and broke, and any image enlarged with both models' probabilities.

What it lists is decided here from the run's saved probabilities (``artefacts/{probe,finetune}_test_probs.npz``)
by ``vision.evaluate.confusion_cells`` and ``changed_rows``; the page shows those lists and draws the images from
one lossless WebP sprite of the images the views need (``artefacts/*_view_images.npz``). ``report.md`` carries
only a placeholder that ``report.html`` fills.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch

from embedlab.report.explorer import _asset, json_for_script
from embedlab.store import Store
from embedlab.text import p_value
from embedlab.vision.cifar10 import CLASSES
from embedlab.vision.evaluate import changed_rows, confusion_cells, confusion_matrix, paired_changes

#: Where report.md asks for the explorer; report.html replaces it.
PLACEHOLDER = '<div id="vision-explorer-placeholder"></div>'
MODELS = ("probe", "finetune")
SPRITE_COLUMNS = 50


def _saved(store: Store, name: str) -> dict | None:
    probs, images = store.artefact(f"{name}_test_probs.npz"), store.artefact(f"{name}_view_images.npz")
    if probs is None or images is None:
        return None
    with np.load(probs) as p, np.load(images) as i:
        return {
            "probs": p["probs"].astype("<f4"),
            "labels": p["labels"].astype(int),
            "index": p["test_index"].astype(int),
            "image_index": i["test_index"].astype(int),
            "images": i["images"],
        }


def sprite_grid(images: np.ndarray, columns: int = SPRITE_COLUMNS) -> np.ndarray:
    """(N, 3, 32, 32) uint8 images as one (rows * 32, columns * 32, 3) picture, image k at row k // columns, column
    k % columns."""
    rows = -(-len(images) // columns)
    grid = np.zeros((rows * 32, columns * 32, 3), np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        grid[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32] = im.transpose(1, 2, 0)
    return grid


def sprite_webp(images: np.ndarray, columns: int = SPRITE_COLUMNS) -> bytes:
    """``sprite_grid`` of the images as one lossless WebP."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(sprite_grid(images, columns)).save(buf, "WEBP", lossless=True, quality=80, method=4)
    return buf.getvalue()


def vision_explorer_data(store: Store) -> dict | None:
    """What the page needs, from the run folder alone; None when no model saved its probabilities and images."""
    saved = {m: s for m in MODELS if (s := _saved(store, m)) is not None}
    if not saved:
        return None
    images = {int(t): im for s in saved.values() for t, im in zip(s["image_index"], s["images"])}
    shown = sorted(images)  # sprite position k holds test image shown[k]
    pos = {t: k for k, t in enumerate(shown)}
    probs = np.full((len(shown), len(MODELS), 10), np.nan, "<f4")
    labels = np.full(len(shown), -1)
    for j, m in enumerate(MODELS):
        if m in saved:
            s = saved[m]
            rows = np.array([pos[t] for t in s["index"] if t in pos], int)
            keep = np.isin(s["index"], shown)
            probs[rows, j], labels[rows] = s["probs"][keep], s["labels"][keep]
    data = {
        "classes": list(CLASSES),
        "models": list(saved),
        "testIndex": shown,
        "labels": labels.tolist(),
        "probs": base64.b64encode(probs.tobytes()).decode(),
        "columns": SPRITE_COLUMNS,
        "cells": {m: _cells(s, pos) for m, s in saved.items()},
        "changes": _changes(saved, pos) if len(saved) == 2 else None,
    }
    sprite = sprite_webp(np.stack([images[t] for t in shown]))
    data.update(sprite=base64.b64encode(sprite).decode(), spriteBytes=len(sprite))
    return data


def _cells(s: dict, pos: dict[int, int]) -> dict:
    """The confusion counts and, per non-empty cell "t,p", the sprite positions it lists, ranked."""
    counts = confusion_matrix(torch.from_numpy(s["probs"].argmax(1)), torch.from_numpy(s["labels"]))
    lists = confusion_cells(s["probs"], s["labels"], s["index"])
    return {
        "counts": counts.tolist(),
        "lists": {f"{t},{p}": [pos[int(s["index"][r])] for r in rows] for (t, p), rows in lists.items()},
    }


def _changes(saved: dict, pos: dict[int, int]) -> dict:
    """Fixed / broken / both wrong on the images both models saw: ranked sprite positions and, per class and overall,
    the counts and the exact McNemar p-value (the rows of ``tables/comparison_changes.csv``)."""
    a, b = saved["probe"], saved["finetune"]
    common, ra, rb = np.intersect1d(a["index"], b["index"], return_indices=True)
    labels = a["labels"][ra]
    lists = changed_rows(a["probs"][ra], b["probs"][rb], labels, common)
    table = paired_changes(
        torch.from_numpy(a["probs"][ra].argmax(1)),
        torch.from_numpy(b["probs"][rb].argmax(1)),
        torch.from_numpy(labels),
        list(CLASSES),
    )
    return {
        "lists": {k: [pos[int(common[r])] for r in rows] for k, rows in lists.items()},
        "table": [{**row, "p": p_value(row["mcnemar_p"])} for row in table.to_dict(orient="records")],
        "paired": len(common),
    }


def vision_explorer_html(data: dict) -> str:
    """The explorer block: markup, its style (the sprite as the one background image), the data as JSON and the
    script."""
    sprite = data.pop("sprite")
    style = _asset("vision_explorer.css") + f'.vx-img{{background-image:url("data:image/webp;base64,{sprite}")}}'
    return (
        f'<section id="vision-explorer" class="explorer"><style>{style}</style>{_asset("vision_explorer.html")}'
        f'<script type="application/json" id="vision-explorer-data">{json_for_script(data)}</script>'
        f"<script>{_asset('vision_explorer.js')}</script></section>"
    )


def fill_vision_placeholder(html: str, store: Store) -> str:
    """``html`` with the explorer in place of the placeholder (or a note when the run saved no test images)."""
    if PLACEHOLDER not in html:
        return html
    data = vision_explorer_data(store)
    block = (
        vision_explorer_html(data)
        if data
        else (
            "<p><em>(this run folder has no artefacts/*_view_images.npz: "
            "the explorer needs the test images a run saves since this version)</em></p>"
        )
    )
    return html.replace(PLACEHOLDER, block)
