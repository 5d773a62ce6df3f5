"""Vision figures: the per-class gallery, confusion matrix, training curves, per-class comparison."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # the backend is the caller's: the command line picks Agg, a notebook its inline one
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure


def gallery(
    images: torch.Tensor, selection: pd.DataFrame, classes: Sequence[str], k: int = 5, title: str = ""
) -> Figure:
    """10 rows (true classes) x (k correct | k incorrect) tiles, nearest-neighbour upscaled (crisp pixels).

    Each tile is titled with the predicted label and its probability; mistakes also name the true label.
    """
    n = len(classes)
    fig, axes = plt.subplots(n, 2 * k, figsize=(2 * k * 1.25 + 0.6, n * 1.42), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    for row in selection.itertuples():
        col = (row.rank - 1) + (0 if row.kind == "correct" else k)
        ax = axes[row.true, col]
        img = images[row.index].permute(1, 2, 0).numpy()
        ax.imshow(img, interpolation="nearest")
        colour = "#1a7f37" if row.kind == "correct" else "#cf222e"
        label = f"{classes[row.pred]} {row.prob:.2f}"
        if row.kind == "incorrect":
            label += f"\n(true {classes[row.true]})"
        ax.set_title(label, fontsize=6.5, color=colour, pad=2)
        for s in ax.spines.values():
            s.set_visible(True)
            s.set_color(colour)
            s.set_linewidth(1.5)
    for c in range(n):
        axes[c, 0].set_ylabel(classes[c], fontsize=9, rotation=0, ha="right", va="center")
    axes[0, 0].annotate(
        f"{k} most confident correct", (0, 1.9), xycoords="axes fraction", fontsize=9, weight="bold", color="#1a7f37"
    )
    axes[0, k].annotate(
        f"{k} most confident incorrect", (0, 1.9), xycoords="axes fraction", fontsize=9, weight="bold", color="#cf222e"
    )
    if title:
        fig.suptitle(title, y=1.0, fontsize=11)
    fig.subplots_adjust(wspace=0.08, hspace=0.55)
    return fig


def confusion(cm: torch.Tensor, classes: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix with counts."""
    cmn = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(cmn.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            v = int(cm[i, j])
            if v:
                ax.text(
                    j, i, str(v), ha="center", va="center", fontsize=7, color="white" if cmn[i, j] > 0.5 else "black"
                )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def curve(values: Sequence[float], xlabel: str, ylabel: str, title: str, log_scale: bool = False) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(np.arange(1, len(values) + 1), values, lw=1.5)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def l2_choice(rows: pd.DataFrame, chosen: float) -> Figure:
    """Train and validation accuracy across the L2 grid."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    positive = [v for v in rows["l2"] if v > 0]
    zero_at = min(positive, default=1.0) / 10  # a grid holding 0 shows it one decade left of the rest, labelled 0
    x = [v if v > 0 else zero_at for v in rows["l2"]]
    ax.plot(x, rows["train_acc"], "o-", label="train")
    ax.plot(x, rows["val_acc"], "s-", label="validation")
    ax.axvline(chosen if chosen > 0 else zero_at, color="black", ls="--", lw=1, label=f"chosen l2 = {chosen:g}")
    ax.set_xscale("log")
    if len(positive) < len(x):
        ax.set_xticks(sorted(set(x)), ["0" if v == zero_at else f"{v:g}" for v in sorted(set(x))])
    ax.set_xlabel("L2 strength")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Choosing the L2 strength on the validation split", fontsize=10)
    fig.tight_layout()
    return fig


def finetune_curves(
    step_loss: Sequence[float], epochs: pd.DataFrame, steps_per_epoch: int, probe_val: float | None
) -> Figure:
    """Left: training loss per step (raw and a running mean); right: validation accuracy per epoch vs the probe's."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss = np.asarray(step_loss, dtype=float)
    a.plot(np.arange(1, len(loss) + 1), loss, lw=0.5, alpha=0.35, label="per step")
    w = max(1, min(50, len(loss) // 10))
    if len(loss) >= w:
        a.plot(
            np.arange(w, len(loss) + 1),
            np.convolve(loss, np.ones(w) / w, mode="valid"),
            lw=1.6,
            label=f"mean of {w} steps",
        )
    for e in range(1, len(epochs)):
        a.axvline(e * steps_per_epoch, color="grey", lw=0.6, ls=":")
    a.set_xlabel("optimiser step")
    a.set_ylabel("training loss (label-smoothed CE)")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    a.set_title("Fine-tuning: training loss", fontsize=10)
    validated = epochs.dropna(subset=["val_accuracy"])  # with --validate end, the last epoch only
    b.plot(validated["epoch"], validated["val_accuracy"], "o-", label="fine-tuned, validation")
    if probe_val is not None:
        b.axhline(probe_val, color="black", ls="--", lw=1, label=f"fixed features, validation ({probe_val:.3f})")
    b.set_xlabel("epoch")
    b.set_ylabel("validation accuracy")
    b.set_xticks(list(epochs["epoch"]))
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    b.set_title("Validation accuracy after the epochs validated", fontsize=10)
    fig.tight_layout()
    return fig


def per_class_comparison(table: pd.DataFrame) -> Figure:
    """What fine-tuning changed per class: the gain in test accuracy (points; above zero: fine-tuning is better), each
    bar labelled with the two accuracies it is the difference of."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(table))
    gain = 100 * table["gain"].to_numpy()
    bars = ax.bar(x, gain, 0.6, color=np.where(gain >= 0, "#0969da", "#cf222e"))
    for bar, fixed, tuned in zip(bars, table["fixed_features"], table["fine_tuned"]):
        y = bar.get_height()
        ax.annotate(
            f"{100 * fixed:.0f}→{100 * tuned:.0f}",
            (bar.get_x() + bar.get_width() / 2, y),
            ha="center",
            va="bottom" if y >= 0 else "top",
            fontsize=8,
            xytext=(0, 2 if y >= 0 else -2),
            textcoords="offset points",
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, table["class"], rotation=30, ha="right")
    span = max(1.0, float(np.abs(gain).max()))
    ax.set_ylim(min(0.0, float(gain.min())) - 0.25 * span, max(0.0, float(gain.max())) + 0.25 * span)
    ax.set_ylabel("fine-tuned − fixed features\n(points of test accuracy)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(
        "Per-class gain of fine-tuning over the linear probe (labels: probe → fine-tuned accuracy, %)", fontsize=10
    )
    fig.tight_layout()
    return fig
