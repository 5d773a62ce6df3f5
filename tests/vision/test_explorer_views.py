"""The Part 1 explorer's lists (vision.evaluate.confusion_cells, changed_rows) against brute force, and its sprite
against the images it was made from."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from embedlab.report.vision_explorer import sprite_webp
from embedlab.vision.evaluate import changed_rows, confusion_cells


def _brute_cells(probs, labels, index, keep):
    out = {}
    for t in range(probs.shape[1]):
        for p in range(probs.shape[1]):
            rows = [i for i in range(len(labels)) if labels[i] == t and probs[i].argmax() == p]
            rows.sort(key=lambda i: (-probs[i].max(), index[i]))
            if t == p and len(rows) > 2 * keep:
                rows = rows[:keep] + rows[-keep:]
            if rows:
                out[(t, p)] = rows
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(2, 5), st.integers(1, 8), st.integers(0, 2**31 - 1), st.booleans())
def test_confusion_cells_equal_brute_force(n, classes, keep, seed, ties):
    rng = np.random.default_rng(seed)
    logits = rng.integers(0, 3, (n, classes)).astype("f4") if ties else rng.normal(size=(n, classes)).astype("f4")
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels, index = rng.integers(0, classes, n), rng.permutation(10 * n)[:n]  # test indices in any order
    got = {k: v.tolist() for k, v in confusion_cells(probs, labels, index, keep).items()}
    assert got == _brute_cells(probs, labels, index, keep)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**31 - 1))
def test_changed_rows_equal_brute_force(n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random((n, 3)).astype("f4"), rng.random((n, 3)).astype("f4")
    labels, index = rng.integers(0, 3, n), rng.permutation(n)
    right_a, right_b = a.argmax(1) == labels, b.argmax(1) == labels
    key = lambda i: (-b[i].max(), index[i])  # noqa: E731
    want = {
        "fixed": sorted((i for i in range(n) if not right_a[i] and right_b[i]), key=key),
        "broken": sorted((i for i in range(n) if right_a[i] and not right_b[i]), key=key),
        "both_wrong": sorted((i for i in range(n) if not right_a[i] and not right_b[i]), key=key),
    }
    assert {k: v.tolist() for k, v in changed_rows(a, b, labels, index).items()} == want


def test_sprite_holds_each_image_losslessly_at_its_place():
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    grid = np.asarray(Image.open(io.BytesIO(sprite_webp(images, columns=3))).convert("RGB"))
    assert grid.shape == (3 * 32, 3 * 32, 3)
    for k, im in enumerate(images):
        r, c = divmod(k, 3)
        assert np.array_equal(grid[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32], im.transpose(1, 2, 0)), k
