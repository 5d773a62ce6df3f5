import math

import pandas as pd
import pytest
import torch
from torch import nn

from embedlab.vision.evaluate import confusion_matrix, gallery_selection, per_class_accuracy
from embedlab.vision.probe import accuracy, choose_l2, fit_probe, predict_proba


def separable(n_per_class: int, dim: int = 20, seed: int = 0, spread: float = 0.5, noise_seed: int | None = None):
    """Ten Gaussian classes; ``noise_seed`` draws new points around the same centres (held-out data)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, dim, generator=g) * 3
    if noise_seed is not None:
        g = torch.Generator().manual_seed(noise_seed)
    y = torch.arange(10).repeat_interleave(n_per_class)
    x = centers[y] + spread * torch.randn(len(y), dim, generator=g) + 100.0  # offset: standardisation matters
    return x, y


def test_probe_is_an_nn_linear_and_separates_separable_data():
    x, y = separable(50)
    xt, yt = separable(30, noise_seed=1)  # same class centres, new noise
    fit = fit_probe(x, y, l2=1e-3)
    assert isinstance(fit.model, nn.Module) and isinstance(fit.model.linear, nn.Linear)
    assert fit.model.linear.weight.shape == (10, 20)
    assert accuracy(predict_proba(fit.model, x), y) == 1.0
    assert accuracy(predict_proba(fit.model, xt), yt) >= 0.95  # new noise around the same centres: it generalises
    assert fit.losses[-1] < fit.losses[0]
    probs = predict_proba(fit.model, x)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(x)))


def test_l2_is_chosen_on_validation_and_shrinks_weights():
    x, y = separable(40, spread=2.0)
    xv, yv = separable(40, seed=2, spread=2.0)
    l2, rows, model = choose_l2(x, y, xv, yv, [1e-4, 1e-1, 10.0])
    assert l2 in (1e-4, 1e-1, 10.0) and len(rows) == 3 and [r["l2"] for r in rows] == [1e-4, 1e-1, 10.0]
    assert accuracy(predict_proba(model, xv), yv) == next(r for r in rows if r["l2"] == l2)["val_acc"]
    best = max(r["val_acc"] for r in rows)
    assert next(r for r in rows if r["l2"] == l2)["val_acc"] == best
    w_weak = fit_probe(x, y, 1e-4).model.linear.weight.norm()
    w_strong = fit_probe(x, y, 10.0).model.linear.weight.norm()
    assert w_strong < w_weak
    with pytest.raises(ValueError):
        fit_probe(x, y, -1.0)


def test_metrics_match_bruteforce():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (300,), generator=g)
    pred = torch.randint(0, 10, (300,), generator=g)
    cm = confusion_matrix(pred, labels)
    for i in range(10):
        for j in range(10):
            assert cm[i, j] == int(((labels == i) & (pred == j)).sum())
    labels[labels == 9] = 8  # a class with no test image: its accuracy is undefined, not 0 or 1
    pred = torch.where(labels == 2, 2, pred)  # a class the model always gets right
    pca = per_class_accuracy(pred, labels)
    assert len(pca) == 10
    for c in range(9):
        assert pca[c] == pytest.approx(float((pred[labels == c] == c).float().mean())), c
    assert pca[2] == 1.0 and math.isnan(float(pca[9]))


def test_gallery_selection_matches_bruteforce():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(400, 10, generator=g), dim=1)
    labels = torch.randint(0, 10, (400,), generator=g)
    labels[probs.argmax(1) != 7] = torch.where(labels[probs.argmax(1) != 7] == 7, 8, labels[probs.argmax(1) != 7])
    sel = gallery_selection(probs, labels, k=5)
    for c in range(10):
        for kind in ("correct", "incorrect"):
            cand = [i for i in range(400) if labels[i] == c and ((probs[i].argmax() == c) == (kind == "correct"))]
            expect = sorted(cand, key=lambda i: -float(probs[i].max()))[:5]
            got = sel[(sel.true == c) & (sel.kind == kind)].sort_values("rank")["index"].tolist()
            assert got == expect, (c, kind)
    # class 7 has no mistakes by construction: it shows what exists
    assert len(sel[(sel.true == 7) & (sel.kind == "incorrect")]) == 0
    wrong = sel[sel.kind == "incorrect"]
    assert (wrong["pred"] != wrong["true"]).all() and isinstance(sel, pd.DataFrame)


def test_paired_changes_count_what_a_second_model_fixed_and_broke():
    from itertools import product

    from scipy.stats import binom

    from embedlab.vision.evaluate import mcnemar_exact, paired_changes

    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (300,), generator=g)
    pred_a = torch.where(torch.rand(300, generator=g) < 0.7, labels, torch.randint(0, 3, (300,), generator=g))
    pred_b = torch.where(torch.rand(300, generator=g) < 0.8, labels, torch.randint(0, 3, (300,), generator=g))
    table = paired_changes(pred_a, pred_b, labels, ["x", "y", "z"])
    for row, (name, c) in zip(table.to_dict("records"), [("x", 0), ("y", 1), ("z", 2), ("all classes", None)]):
        idx = [i for i in range(300) if c is None or int(labels[i]) == c]  # brute force, image by image
        a = [bool(pred_a[i] == labels[i]) for i in idx]
        b = [bool(pred_b[i] == labels[i]) for i in idx]
        counts = {
            k: sum(1 for x, y in zip(a, b) if (x, y) == v)
            for k, v in {
                "fixed": (False, True),
                "broken": (True, False),
                "both_wrong": (False, False),
                "both_right": (True, True),
            }.items()
        }
        assert row["class"] == name and row["images"] == len(idx) and {k: row[k] for k in counts} == counts
    total = table.iloc[-1]
    assert (total["fixed"] - total["broken"]) / 300 == pytest.approx(
        float((pred_b == labels).float().mean() - (pred_a == labels).float().mean())
    )
    # the exact test against the binomial sum it stands for
    for f, b in product(range(0, 9, 2), range(0, 9, 3)):
        n = f + b
        expected = (
            1.0
            if n == 0
            else min(
                1.0,
                sum(
                    binom.pmf(k, n, 0.5)
                    for k in range(n + 1)
                    if binom.pmf(k, n, 0.5) <= binom.pmf(f, n, 0.5) * (1 + 1e-7)
                ),
            )
        )
        assert mcnemar_exact(f, b) == pytest.approx(expected)
