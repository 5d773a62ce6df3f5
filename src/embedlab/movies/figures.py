"""Pictures of the movie study: loss curves, the embedding map and the dimension sweep."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # the backend is the caller's: the command line picks Agg, a notebook its inline one
import numpy as np
from adjustText import adjust_text
from matplotlib import patheffects
from matplotlib.figure import Figure

from embedlab.movies.train import RunResult


def _reference_lines(ax: plt.Axes, c_star: float, c_zero: float) -> None:
    ax.axhline(c_star, color="black", ls="--", lw=1, label=f"spectral optimum {c_star:.4g}")
    ax.axhline(c_zero, color="grey", ls=":", lw=1, label=f"V = 0 cost {c_zero:.4g}")


#: The loss plots' y-axis ends at this multiple of the larger of the start cost and the V = 0 cost: a diverging run
#: leaves the plot there, marked, instead of stretching the axis over orders of magnitude.
CLIP = 5.0


def _top(c_zero: float, runs: Sequence[RunResult]) -> float:
    return CLIP * max(c_zero, max((r.losses[0] for r in runs if r.losses), default=c_zero))


def _ylim(ax: plt.Axes, c_star: float, c_zero: float, runs: Sequence[RunResult]) -> None:
    ax.set_ylim(0.8 * c_star, _top(c_zero, runs))


def _plot_run(ax: plt.Axes, r: RunResult, top: float, label: str) -> None:
    """One run's cost by iteration; a diverged run is drawn until it leaves the plot (or ends), marked with a cross."""
    losses = np.asarray(r.losses, dtype=float)
    if not r.diverged:
        ax.plot(np.arange(len(losses)), losses, lw=1.4, label=label)
        return
    out = np.flatnonzero(~np.isfinite(losses) | (losses > top))
    end = int(out[0]) if len(out) else len(losses) - 1
    (line,) = ax.plot(np.arange(end + 1), np.minimum(losses[: end + 1], top), lw=1.4, label=label)
    ax.plot(end, min(losses[end], top) if np.isfinite(losses[end]) else top, "x", color=line.get_color(), ms=9, mew=2)


def loss_curves_by_optimizer(results: Sequence[RunResult], c_star: float, c_zero: float) -> Figure:
    """One panel per optimiser, one line per learning rate; a diverged run ends in a cross where it leaves the plot."""
    names = list(dict.fromkeys(r.optimizer for r in results))
    ncols = min(3, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.3 * nrows), squeeze=False, sharey=True)
    top = _top(c_zero, results)
    for ax, name in zip(axes.flat, names):
        runs = [r for r in results if r.optimizer == name]
        for r in runs:
            _plot_run(ax, r, top, f"lr={r.lr:g}" + (f" (diverged at {r.iterations})" if r.diverged else ""))
        _reference_lines(ax, c_star, c_zero)
        ax.set_yscale("log")
        ax.set_ylim(0.8 * c_star, top)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3, which="both")
        # below the panel: inside it, the legend covered the curves
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("cost c(V) (log scale)")
    fig.suptitle(
        f"Loss vs iteration per optimiser across learning rates (y-axis ends at {CLIP:g}x the start cost; "
        "x: where a diverging run left it)"
    )
    fig.tight_layout()
    return fig


def best_runs_together(
    best: Sequence[RunResult], c_star: float, c_zero: float, title: str = "Best learning rate of each optimiser"
) -> Figure:
    """Runs together (the study's: the best of each optimiser): the cost (left) and its relative gap to the optimum
    (right)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in best:
        it = np.arange(len(r.losses))
        ax.plot(it, r.losses, lw=1.6, label=f"{r.optimizer} lr={r.lr:g}")
        gap = np.maximum((np.asarray(r.losses) - c_star) / c_star, 1e-6)
        ax2.plot(it, gap, lw=1.6, label=f"{r.optimizer} lr={r.lr:g}")
    _reference_lines(ax, c_star, c_zero)
    ax.set_yscale("log")
    _ylim(ax, c_star, c_zero, best)
    ax.set_ylabel("cost c(V) (log scale)")
    ax.set_title(title)
    ax2.axhline(0.01, color="black", ls="--", lw=1, label="1 % gap")
    ax2.set_yscale("log")
    ax2.set_ylabel("(c - c*) / c*  (log scale)")
    ax2.set_title("Relative gap to the spectral optimum c*")
    for a in (ax, ax2):
        a.set_xlabel("iteration")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def embedding_map(
    coords: np.ndarray,
    main_genre: Sequence[str],
    highlights: dict[str, tuple[int, list[int]]],
    labels: Sequence[str],
    title: str = "Movie embeddings in 2-D",
) -> Figure:
    """2-D map coloured by main genre; each query (large marker) and its top-k (rings) are marked."""
    fig, ax = plt.subplots(figsize=(11, 8.5))
    genres = np.asarray(main_genre)
    uniq, counts = np.unique(genres, return_counts=True)
    order = uniq[np.argsort(-counts)]
    cmap = plt.get_cmap("tab20")
    for i, g in enumerate(order):
        m = genres == g
        ax.scatter(coords[m, 0], coords[m, 1], s=7, alpha=0.45, color=cmap(i % 20), label=f"{g} ({m.sum()})")
    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    texts = []
    marker_colors = ["#000000", "#e6007e", "#0050ff", "#b8860b", "#8c564b"]  # not in the genre palette's tones
    markers = ["*", "P", "X", "D", "o"]
    for c, mk, (name, (q, recs)) in zip(marker_colors * 4, markers * 4, highlights.items()):
        ax.scatter(coords[recs, 0], coords[recs, 1], s=80, facecolors="none", edgecolors=c, linewidths=2.0, zorder=4)
        ax.scatter(
            coords[q, 0],
            coords[q, 1],
            s=280,
            marker=mk,
            color=c,
            edgecolors="white",
            zorder=5,
            label=f"{name} + its top-{len(recs)} (rings)",
        )
        texts.append(ax.text(*coords[q], labels[q], fontsize=10, weight="bold", color=c, path_effects=halo, zorder=6))
        texts += [ax.text(*coords[r], labels[r], fontsize=7.5, color=c, path_effects=halo, zorder=6) for r in recs[:3]]
    ax.set_xticks([])
    ax.set_yticks([])
    # labels pushed apart, never overlapping
    adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.6})
    legend = ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for handle in legend.legend_handles:  # one marker size in the legend, whatever the size on the map
        handle.set_sizes([45])
        handle.set_alpha(1.0)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def dim_sweep(
    dims: Sequence[int], gaps: Sequence[float], hit_rates: Sequence[float], rel_costs: Sequence[float]
) -> Figure:
    """Relative cost, optimiser gap and HitRate@10 against the embedding dimension."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(dims, 100 * np.asarray(rel_costs), "o-", label="‖X‖²_F left unexplained by the optimum")
    a1.plot(dims, 100 * np.asarray(gaps), "s--", label="gradient descent's gap to the optimum")
    a1.set_xscale("log")
    a1.set_xlabel("dimension d")
    a1.set_ylabel("per cent")
    a1.legend(fontsize=9)
    a1.grid(alpha=0.3)
    a2.plot(dims, hit_rates, "o-", color="C2")
    a2.set_xscale("log")
    a2.set_xlabel("dimension d")
    a2.set_ylabel("held-out HitRate@10")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    return fig
