"""The report's first screen: each question of the mission, its answer in one line, and a link to its section; then the
terms the report uses before it explains them."""

from __future__ import annotations

import pandas as pd
from markdown.extensions.toc import slugify
from markupsafe import Markup

from embedlab.results import Comparison, FinetuneResult, ProbeResult, RunResults
from embedlab.text import md_code, md_text, percent

#: The headings the links point to (report.html's anchors are made from them by the same slugify).
HEADINGS = {
    "1A": "Part 1A — frozen features + logistic regression",
    "1B": "Part 1B — most confident correct and incorrect test predictions",
    "1C": "Comparison: fixed features vs fine-tuning",
    "2A": "2A — building X from the data",
    "2B": "2B — minimising the cost by gradient descent",
    "2C": "2C — recommendations",
}

#: Jargon the report uses, said once in plain words.
GLOSSARY = {
    "c*": "the lowest cost any d-dimensional embedding can reach, computed exactly (from the eigenvectors of X) to "
    "measure how close gradient descent gets",
    "eigsh": "SciPy's solver for a few eigenvectors of a large symmetric matrix, used here to compute c*",
    "LP-FT": "linear probing, then fine-tuning: fine-tuning starts its new classifier from the fitted probe",
    "TTA": "test-time augmentation: each test image is also classified mirrored, and the two predictions averaged",
    "Jaccard@10": "how much two top-10 lists overlap: shared titles divided by distinct titles (1 = the same list)",
}


def link(key: str) -> Markup:
    return Markup(f"[{key}](#{slugify(HEADINGS[key], '-')})")


Row = tuple[str, Markup, Markup]


def glance_rows(results: RunResults) -> list[Row]:
    """(question, answer, section link) for each part of the mission this run answered; text from the data in an answer
    is escaped here (``md_text``), the rest is the answer's own Markdown."""
    return _vision_rows(results) + _movie_rows(results)


def _vision_rows(results: RunResults) -> list[Row]:
    rows = []
    p, f, c = results.probe, results.finetune, results.comparison
    if p is not None:
        rows.append(
            (
                "1A: how well do a frozen ImageNet network's features classify CIFAR-10?",
                Markup(
                    f"**{percent(p.fit.evaluation.test_accuracy)}** test accuracy: a logistic regression (`nn.Linear`)"
                    f" on {md_code(p.features.backbone)} features at {p.features.resolution} px"
                ),
                link("1A"),
            )
        )
        rows.append(
            (
                "1B: which test images is it most sure of, right and wrong?",
                Markup("per class, the 5 most confident correct and the 5 most confident incorrect, in one gallery"),
                link("1B"),
            )
        )
    if p is not None and f is not None and c is not None:
        better = "better" if c.accuracy_gain > 0 else "worse" if c.accuracy_gain < 0 else "no different"
        changed = "" if c.fixed is None else f"; it fixed {c.fixed:,} of the probe's mistakes and broke {c.broken:,}"
        p_acc, f_acc, where = compared_accuracies(p, f, c)
        rows.append(
            (
                "1C: does fine-tuning beat fixed features?",
                Markup(
                    f"**{percent(f_acc)}** against {percent(p_acc)}{where}: "
                    f"{better} by {abs(100 * c.accuracy_gain):.2f} points{changed}"
                ),
                link("1C"),
            )
        )
    return rows


def _movie_rows(results: RunResults) -> list[Row]:
    rows = []
    if (d := results.movies_data) is not None:
        rows.append(
            (
                "2A: X[i, j] = users who liked both movies i and j",
                Markup(
                    f"{d.users_with_likes:,} users' likes (rating ≥ {d.like_threshold:g}) of {d.movies_with_likes:,} "
                    f"movies: {d.x_nnz:,} non-zero entries, the largest {d.x_max:,}"
                ),
                link("2A"),
            )
        )
    if (m := results.movies_fit) is not None:
        rows.append(
            (
                "2B: gradient descent on Σ_{i≠j} (v_i·v_j − X_ij)²",
                Markup(
                    f"{m.runs} runs (optimiser × learning rate), {m.runs_diverged} diverged; the best, "
                    f"{md_text(m.best_optimizer)} lr={m.best_lr:g}, ends **{percent(m.best_gap_to_optimum)}** above"
                    " the optimum c\\*"
                ),
                link("2B"),
            )
        )
    if (r := results.movies_recommend) is not None:
        first = next(iter(r.top), None)
        head = "" if first is None else f"{md_text(first)} → {'; '.join(map(md_text, r.top[first][:3]))} …"
        s = results.movies_stability
        agree = (
            ""
            if s is None or s.converged_mean_jaccard is None
            else f"; runs that reach the optimum recommend alike (mean Jaccard@10 {s.converged_mean_jaccard:.2f})"
        )
        rows.append(
            (
                "2C: the top 10 for each query movie; do they change with the optimiser?",
                Markup(head + agree),
                link("2C"),
            )
        )
    return rows


def compared_accuracies(probe: ProbeResult, finetune: FinetuneResult, c: Comparison) -> tuple[float, float, str]:
    """The two models' test accuracies as the comparison compares them: on the test images both were evaluated on
    when a subsampled run tested them on different sets (with the words that say so), else on their own test sets."""
    n = c.paired_images
    if n is None or c.fixed is None or c.broken is None or c.both_wrong is None:
        return probe.fit.evaluation.test_accuracy, finetune.evaluation.test_accuracy, ""
    if n >= min(probe.features.test_images, finetune.test_images):
        return probe.fit.evaluation.test_accuracy, finetune.evaluation.test_accuracy, ""
    return (n - c.fixed - c.both_wrong) / n, (n - c.broken - c.both_wrong) / n, f" on the {n:,} test images both saw"


def top_side_by_side(results: RunResults, n: int = 5) -> pd.DataFrame | None:
    """The first ``n`` recommendations of every query movie, one column each, for the first screen; None without
    recommendations."""
    r = results.movies_recommend
    if r is None or not r.top:
        return None
    return pd.DataFrame({"rank": range(1, n + 1), **{q: (top[:n] + [""] * n)[:n] for q, top in r.top.items()}})
