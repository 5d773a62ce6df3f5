"""Classification metrics and the gallery selection, shared by the probe and fine-tuning (pure tensor code)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """Recall of each true class."""
    out = torch.zeros(n_classes)
    for c in range(n_classes):
        m = labels == c
        out[c] = (pred[m] == c).float().mean() if m.any() else float("nan")
    return out


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """Counts C[true, predicted]."""
    return torch.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def gallery_selection(probs: torch.Tensor, labels: torch.Tensor, k: int = 5) -> pd.DataFrame:
    """For each true class: the k most confident correct and the k most confident wrong predictions.

    Confidence is the probability of the predicted label (for a mistake: of the wrong label).
    Rows: true, kind ('correct' / 'incorrect'), rank (1 = most confident), index, pred, prob.
    A class with fewer than k of a kind gets only what exists. Ties break by the lower index.
    """
    conf, pred = probs.max(dim=1)
    rows = []
    for c in range(probs.shape[1]):
        for kind, mask in (("correct", (labels == c) & (pred == c)), ("incorrect", (labels == c) & (pred != c))):
            idx = torch.nonzero(mask).flatten()
            order = sorted(idx.tolist(), key=lambda i: (-float(conf[i]), i))[:k]
            for rank, i in enumerate(order, start=1):
                rows.append(
                    {"true": c, "kind": kind, "rank": rank, "index": i, "pred": int(pred[i]), "prob": float(conf[i])}
                )
    return pd.DataFrame(rows, columns=["true", "kind", "rank", "index", "pred", "prob"])


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value of a paired comparison: under "neither model is better" each of the
    ``fixed + broken`` images that changed is equally likely to have changed either way (a fair binomial)."""
    from scipy.stats import binomtest

    n = fixed + broken
    return 1.0 if n == 0 else float(binomtest(fixed, n, 0.5).pvalue)


def paired_changes(
    pred_a: torch.Tensor, pred_b: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> pd.DataFrame:
    """What model B changed against model A on the same images, per true class and overall: ``fixed`` (A wrong, B
    right), ``broken`` (A right, B wrong), ``both_wrong``, ``both_right``, and the exact McNemar p-value of fixed
    against broken. B's accuracy minus A's is (fixed - broken) / images, row by row."""
    right_a, right_b = pred_a == labels, pred_b == labels
    rows = []
    for name, mask in [
        *((c, labels == i) for i, c in enumerate(classes)),
        ("all classes", torch.ones_like(labels, dtype=torch.bool)),
    ]:
        fixed, broken = int((~right_a & right_b & mask).sum()), int((right_a & ~right_b & mask).sum())
        rows.append(
            {
                "class": name,
                "images": int(mask.sum()),
                "fixed": fixed,
                "broken": broken,
                "both_wrong": int((~right_a & ~right_b & mask).sum()),
                "both_right": int((right_a & right_b & mask).sum()),
                "mcnemar_p": mcnemar_exact(fixed, broken),
            }
        )
    return pd.DataFrame(rows)


#: How many images a diagonal cell of the explorer shows from each end of its ranking (most and least confident).
DIAGONAL_SHOWN = 20


def ranked(probs: torch.Tensor | np.ndarray, test_index: np.ndarray) -> np.ndarray:
    """Rows by the probability of the predicted class, highest first; ties by the lower test index."""
    conf = np.asarray(probs).max(axis=1)
    return np.lexsort((np.asarray(test_index), -conf))


def confusion_cells(
    probs: torch.Tensor | np.ndarray, labels: np.ndarray, test_index: np.ndarray, keep: int = DIAGONAL_SHOWN
) -> dict[tuple[int, int], np.ndarray]:
    """The rows the explorer shows for each non-empty (true, predicted) cell, ranked (see ``ranked``): every image of
    an off-diagonal cell, and of a diagonal one the ``keep`` most and ``keep`` least confident."""
    order = ranked(probs, test_index)
    pred, labels = np.asarray(probs).argmax(axis=1)[order], np.asarray(labels)[order]
    cells = {}
    for t, p in sorted(set(zip(labels.tolist(), pred.tolist()))):
        rows = order[(labels == t) & (pred == p)]
        cells[(t, p)] = np.concatenate([rows[:keep], rows[-keep:]]) if t == p and len(rows) > 2 * keep else rows
    return cells


def changed_rows(
    probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray, test_index: np.ndarray
) -> dict[str, np.ndarray]:
    """Of images both models saw (same rows): those B fixed (A wrong, B right), broke (A right, B wrong) and both got
    wrong, each ranked by B's probability of its prediction (see ``ranked``)."""
    order = ranked(probs_b, test_index)
    right_a = (np.asarray(probs_a).argmax(axis=1) == labels)[order]
    right_b = (np.asarray(probs_b).argmax(axis=1) == labels)[order]
    return {
        "fixed": order[~right_a & right_b],
        "broken": order[right_a & ~right_b],
        "both_wrong": order[~right_a & ~right_b],
    }
