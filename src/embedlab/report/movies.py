"""What the movie section of the report prints (template ``movies.md.j2``), from typed results and the saved tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from markupsafe import Markup

from embedlab.config import MoviesConfig
from embedlab.movies.evaluate import at_k
from embedlab.movies.movielens import slug
from embedlab.report.common import saved_config
from embedlab.report.explorer import PLACEHOLDER
from embedlab.results import ColdStart, DataStats, Holdout, RunResults
from embedlab.runs import RunDir
from embedlab.store import Store
from embedlab.text import markdown_table

#: Method names of the held-out tables (``movies.evaluate``) that the readings compare.
EMBEDDING_PREFIX = "embedding"
NORMALISED_COLIKES = "co-likes X_ij/sqrt(n_i n_j)"
MOST_POPULAR = "most popular"


def data_table(d: DataStats) -> Markup:
    """2A's quantities as one two-column table."""
    quantities = [
        ("users", f"{d.users:,}"),
        ("ratings", f"{d.ratings:,}"),
        ("movies in the catalogue / rated", f"{d.movies_in_catalogue:,} / {d.movies_rated:,}"),
        (f"likes (rating ≥ {d.like_threshold})", f"{d.likes:,}"),
        ("movies with ≥ 1 like (size M of X)", f"{d.movies_with_likes:,}"),
        ("non-zeros of X", f"{d.x_nnz:,}"),
        ("density of X (off-diagonal)", f"{d.x_density:.4f}"),
        ("max X[i,j]", str(d.x_max)),
        ("build time of L", f"{d.build_seconds} s"),
        ("chunked pass over X (nnz, max, ‖X‖²_F, top pairs)", f"{d.x_summary_seconds} s"),
        ("data", d.source),
    ]
    return Markup(markdown_table(pd.DataFrame(quantities, columns=["quantity", "value"])))


@dataclass(frozen=True)
class AnchorReading:
    """Recall@k of every held-out method, best first, and where the assignment's embedding stands."""

    ranked: list[tuple[str, float]]
    best: str
    embedding_is_best: bool
    behind: float  # the best method's Recall@k minus the embedding's


def _score(row: dict[str, float | None] | None, key: str) -> float | None:
    """One score of a held-out table row; None where the row or the score is absent."""
    return None if row is None or key not in row else row[key]


def anchor_reading(h: Holdout, k: int) -> AnchorReading | None:
    key = at_k("recall", k)
    rows = {name: v for name, r in h.methods.items() if (v := _score(r, key)) is not None}
    emb = next(((n, v) for n, v in rows.items() if n.startswith(EMBEDDING_PREFIX)), None)
    if emb is None or len(rows) < 2:
        return None
    ranked = sorted(rows.items(), key=lambda kv: -kv[1])
    return AnchorReading(ranked, ranked[0][0], ranked[0][0] == emb[0], ranked[0][1] - emb[1])


@dataclass(frozen=True)
class BucketReading:
    """HitRate@k of the embedding, the normalised co-likes and popularity in one cold-start bucket."""

    bucket: str
    embedding: float
    normalised: float
    popular: float


def cold_start_reading(cold: ColdStart, k: int) -> list[BucketReading]:
    key = at_k("hit_rate", k)
    out = []
    for bucket, methods in cold.buckets.items():
        emb = next((_score(row, key) for name, row in methods.items() if name.startswith(EMBEDDING_PREFIX)), None)
        norm = _score(methods[NORMALISED_COLIKES], key) if NORMALISED_COLIKES in methods else None
        pop = _score(methods[MOST_POPULAR], key) if MOST_POPULAR in methods else None
        if emb is not None and norm is not None and pop is not None:
            out.append(BucketReading(bucket, emb, norm, pop))
    return out


def movies_context(run: RunDir, results: RunResults) -> dict[str, Any]:
    """Part 2 A/B/C plus the held-out evaluation: every number read from the run's results, tables and figures."""
    cfg, _ = saved_config(run, MoviesConfig, "movies")
    h = results.movies_holdout
    sampled = (
        None
        if h is None
        else next((int(q) for r in h.methods.values() if (q := _score(r, "queries")) is not None), None)
    )
    return {
        "results": results,
        "cfg": cfg,
        "slug": slug,
        "explorer": Markup(PLACEHOLDER),
        "data_table": None if results.movies_data is None else data_table(results.movies_data),
        "anchors": None if h is None else anchor_reading(h, cfg.top_k),
        "cold": [] if results.movies_cold_start is None else cold_start_reading(results.movies_cold_start, cfg.top_k),
        "sampled": sampled,
        "has_table": lambda name: Store(run).table(name) is not None,
        "has_figure": lambda name: Store(run).has_figure(name),
    }
