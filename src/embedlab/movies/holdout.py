"""The held-out check: the embedding refitted on training users against co-count baselines, popularity and the field's
own recommenders (EASE, ALS), scored on the test users' likes, overall and by the query movie's popularity."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from embedlab.config import MoviesConfig
from embedlab.errors import InputError
from embedlab.movies.anchors import Tuned, als_candidates, ease_candidates, implicit_available, tune
from embedlab.movies.cooccurrence import CoLikes
from embedlab.movies.evaluate import (
    Queries,
    Scorer,
    at_k,
    bucket_masks,
    build_queries,
    colike_scorers,
    cosine_scorer,
    recommend_all,
    recommend_all_multi,
    score_recs,
    split_users,
)
from embedlab.movies.objective import CoLikeOperator
from embedlab.movies.prepare import Prepared, make_operator
from embedlab.movies.recommend import eligible_items
from embedlab.movies.steps import Fitted, final_budget, fit_from_start
from embedlab.movies.tables import genre_matrix, item_table
from embedlab.movies.train import RunResult
from embedlab.results import ColdStart, Holdout
from embedlab.store import Output, Table

log = logging.getLogger(__name__).info


@dataclass
class HoldoutSplit:
    """Training users' likes (for the fit and the baselines) and the test users' queries."""

    train: CoLikes
    queries: Queries  # a seeded sample when there are more than holdout_max_queries
    items: pd.DataFrame
    queries_total: int

    @classmethod
    def make(cls, cfg: MoviesConfig, ratings: pd.DataFrame, movies: pd.DataFrame, co: CoLikes) -> HoldoutSplit:
        """L of the training users; the test users' likes over the same movie columns. Both are rows of 2A's L (``co``,
        all users' likes), restricted to the movies the training users liked: nothing is rebuilt from the ratings."""
        train_users, test_users = split_users(
            ratings["userId"].to_numpy(), cfg.holdout_fraction, cfg.holdout_seed, "--holdout-fraction"
        )
        mine = np.isin(co.user_ids, train_users)
        likes = co.likes[mine]
        cols = np.flatnonzero(np.bincount(likes.indices, minlength=co.n_movies))
        if not len(cols):
            raise InputError(
                f"no training user of the held-out split liked a movie (rating >= {co.threshold}); lower"
                " --like-threshold"
            )
        train = CoLikes(
            likes=likes[:, cols], user_ids=co.user_ids[mine], movie_ids=co.movie_ids[cols], threshold=co.threshold
        )
        test = co.likes[np.isin(co.user_ids, test_users)][:, cols]
        queries = build_queries(test[np.diff(test.indptr) > 0])
        return cls(
            train=train,
            queries=queries.sample(cfg.holdout_max_queries, cfg.holdout_seed),
            items=item_table(train, movies),
            queries_total=len(queries.items),
        )


@dataclass
class HeldOut:
    """The held-out split and the co-like operator of its training users (built once, used by the held-out table and the
    dimension sweep), with the held-out step's output for the run folder."""

    split: HoldoutSplit
    op: CoLikeOperator
    out: Output


def holdout_tables(
    cfg: MoviesConfig, split: HoldoutSplit, v: torch.Tensor | None, anchors: dict[str, Scorer] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(overall, by query popularity) held-out metrics of the embedding ``v`` (None: its refit diverged), the baselines
    and ``anchors``."""
    counts = split.train.like_counts
    eligible = eligible_items(counts, cfg.min_likes)
    genres = genre_matrix(split.items["genres"])
    popular = torch.from_numpy(counts.astype(np.float32))
    all_recs = (
        {}
        if v is None
        else {f"embedding cosine (d={v.shape[1]})": recommend_all(cosine_scorer(v), split.queries, cfg.top_k, eligible)}
    )
    all_recs.update(recommend_all_multi(colike_scorers(split.train.likes, counts), split.queries, cfg.top_k, eligible))
    all_recs["most popular"] = recommend_all(lambda q: popular.expand(len(q), -1), split.queries, cfg.top_k, eligible)
    all_recs.update(
        {name: recommend_all(scorer, split.queries, cfg.top_k, eligible) for name, scorer in (anchors or {}).items()}
    )
    masks = bucket_masks(split.queries, counts)
    overall, cold = [], []
    k = cfg.top_k
    for name, recs in all_recs.items():
        overall.append({"method": name, **score_recs(recs, split.queries, counts, genres)})
        for bucket, mask in masks.items():
            res = score_recs(recs, split.queries, counts, genres, mask)
            cold.append(
                {
                    "method": name,
                    "query likes": bucket,
                    **{m: res[m] for m in (at_k("hit_rate", k), at_k("recall", k), at_k("mean_hits", k))},
                    "mean_popularity": res["mean_popularity"],
                    "queries": res["queries"],
                }
            )
    return pd.DataFrame(overall), pd.DataFrame(cold)


def embedding_holdout(cfg: MoviesConfig, split: HoldoutSplit, v: torch.Tensor) -> dict[str, float]:
    """The held-out metrics of the embedding ``v`` alone over every query (its row of ``holdout_tables``)."""
    counts = split.train.like_counts
    recs = recommend_all(cosine_scorer(v), split.queries, cfg.top_k, eligible_items(counts, cfg.min_likes))
    return score_recs(recs, split.queries, counts, genre_matrix(split.items["genres"]))


def tuned_anchors(cfg: MoviesConfig, split: HoldoutSplit) -> tuple[list[Tuned], list[str]]:
    """EASE and ALS, each tuned on a validation slice of the training users and refitted on all of them; why any is
    missing."""
    fit_rows, val_rows = split_users(
        np.arange(split.train.likes.shape[0]),
        cfg.anchor_validation_fraction,
        cfg.holdout_seed + 1,
        "--anchor-validation-fraction",
    )
    if len(fit_rows) > cfg.anchor_max_users:  # the candidates' fits, not the refit, scale with it
        fit_rows = np.sort(np.random.default_rng(cfg.holdout_seed + 2).choice(fit_rows, cfg.anchor_max_users, False))
    fit_likes, val_queries = (
        split.train.likes[fit_rows],
        build_queries(split.train.likes[val_rows]).sample(cfg.holdout_max_queries, cfg.holdout_seed),
    )
    eligible = eligible_items(split.train.like_counts, cfg.min_likes)
    tuned, notes = [], []
    for name in cfg.anchors:
        if name == "ease" and split.train.n_movies > cfg.ease_max_items:
            notes.append(
                f"EASE skipped: {split.train.n_movies:,} movies > ease_max_items = {cfg.ease_max_items:,} (its dense M"
                " x M inverse)"
            )
            continue
        if name == "als" and not implicit_available():
            notes.append("ALS skipped: the `implicit` library is not installed (pip install implicit)")
            continue
        label, candidates = (
            ("EASE (item-item, closed form)", ease_candidates(cfg.ease_lambdas))
            if name == "ease"
            else (
                "ALS item factors cosine (implicit)",
                als_candidates(cfg.als_factors, cfg.als_regularization, cfg.als_alpha, cfg.als_iterations, cfg.seed),
            )
        )
        log(f"[eval] {label}: {len(candidates)} settings, fitted on {len(fit_rows):,} users and scored on the rest")
        t0 = time.perf_counter()
        tuned.append(tune(label, candidates, fit_likes, val_queries, cfg.top_k, eligible, split.train.likes))
        notes.append(
            f"{label}: {len(candidates)} settings fitted on {len(fit_rows):,} users and scored on {len(val_rows):,},"
            f" the chosen one refitted on {split.train.likes.shape[0]:,}, in {time.perf_counter() - t0:.1f} s"
        )
    return tuned, notes


@dataclass
class Contenders:
    """What the held-out table compares, fitted on the training users: the split and its operator, the embedding's
    refit (best setting) and the tuned anchors, with why any anchor is missing."""

    split: HoldoutSplit
    op: CoLikeOperator
    refit: RunResult
    tuned: list[Tuned]
    notes: list[str]


def fit_contenders(cfg: MoviesConfig, data: Prepared, fitted: Fitted) -> Contenders:
    """The held-out split, the embedding refitted on its training users and the field's own recommenders (EASE, ALS)
    tuned and refitted on them: everything ``step_holdout`` scores."""
    log(
        "[eval] held-out users: embeddings vs co-likes, popularity, EASE and ALS, overall and by the query movie's like"
        " count"
    )
    split = HoldoutSplit.make(cfg, data.ratings, data.movies, data.co)
    op = make_operator(split.train.likes, data.summary.part_fro_sq)  # ||X_train||_F^2 from 2A's pass
    refit = fit_from_start(cfg, op, cfg.dim, fitted.final.optimizer, fitted.final.lr, final_budget(cfg))
    tuned, notes = tuned_anchors(cfg, split)
    return Contenders(split, op, refit, tuned, notes)


def step_holdout(cfg: MoviesConfig, contenders: Contenders) -> HeldOut:
    """Held-out users: the embedding (best setting, refitted on training users) against co-count baselines,
    popularity and the field's own recommenders (EASE, ALS), overall and by the query movie's popularity.
    Returns the split and its operator, which the dimension sweep scores on too."""
    split, refit, tuned = contenders.split, contenders.refit, contenders.tuned
    overall, cold = holdout_tables(
        cfg, split, refit.v if not refit.diverged else None, {t.name: t.scorer for t in tuned}
    )
    tuning = pd.DataFrame(
        [
            {"method": t.name, "setting": s, f"validation recall@{cfg.top_k}": r, "chosen": s == t.setting}
            for t in tuned
            for s, r in t.validation.items()
        ]
    )
    buckets: dict[str, dict[str, dict[str, float | None]]] = {}
    for r in cold.to_dict("records"):
        buckets.setdefault(r["query likes"], {})[r["method"]] = {
            k: r[k] for k in cold.columns if k not in ("method", "query likes")
        }
    held = Holdout(
        refit_status=refit.status,
        queries_total=split.queries_total,
        anchor_notes=contenders.notes,
        methods={r["method"]: {k: r[k] for k in overall.columns if k != "method"} for r in overall.to_dict("records")},
    )
    out = Output(
        results=(held, ColdStart(buckets)),
        tables={"holdout": Table(overall), "cold_start": Table(cold), "anchor_tuning": Table(tuning)},
    )
    return HeldOut(split, contenders.op, out)
