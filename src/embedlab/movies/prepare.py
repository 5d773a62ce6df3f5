"""2A: the ratings -> the likes L -> what the report shows of X (one compiled pass, X never formed), and the checks
that refuse sizes this data cannot support before any fitting."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from embedlab.config import MoviesConfig
from embedlab.data import (
    available_memory,
    download_url,
    ensure_movielens,
    movielens_digests,
    resolve_data_dir,
    verify_movielens,
)
from embedlab.distributed import balanced_rows, current
from embedlab.errors import InputError
from embedlab.movies.cooccurrence import (
    CoLikes,
    ColikeSummary,
    build_colikes,
    colike_fro_sq,
    colike_stats,
    colike_summary,
)
from embedlab.movies.evaluate import split_users
from embedlab.movies.movielens import load_movies, load_ratings, untitled, with_years
from embedlab.movies.objective import CoLikeOperator
from embedlab.movies.recommend import eligible_items
from embedlab.movies.tables import item_table
from embedlab.movies.titles import TitleIndex, nobody_liked
from embedlab.movies.train import default_workers
from embedlab.results import DataStats
from embedlab.store import Output, Table

log = logging.getLogger(__name__).info
warn = logging.getLogger(__name__).warning


@dataclass
class Query:
    """A query title resolved to its movie and its row of X."""

    text: str
    movie_id: int
    row: int
    title: str


@dataclass
class Prepared:
    """What 2A produces: the tables, L, the item table, the resolved queries, X's summary and the movies that may be
    recommended (``min_likes``), with 2A's output for the run folder."""

    ratings: pd.DataFrame
    movies: pd.DataFrame
    co: CoLikes
    items: pd.DataFrame
    queries: list[Query]
    summary: ColikeSummary
    eligible: torch.Tensor
    out: Output


def load_tables(cfg: MoviesConfig) -> tuple[pd.DataFrame, pd.DataFrame, str, dict[str, str]]:
    """(ratings, movies, description, each file's sha256): a MovieLens release from disk, or a synthetic one of a named
    shape (no files)."""
    if cfg.synthetic:
        from embedlab.movies.synthetic import check_fits, generate

        shape = check_fits(cfg.synthetic)
        log(
            f"[2A] generating synthetic {cfg.synthetic}: {shape[0]:,} users, {shape[1]:,} movies, {shape[2]:,} ratings"
            f" (seed {cfg.seed})"
        )
        syn = generate(cfg.synthetic, seed=cfg.seed)
        return syn.ratings, with_years(syn.movies), f"synthetic {cfg.synthetic} (seed {cfg.seed})", {}
    folder = ensure_movielens(resolve_data_dir(cfg.data_dir), None if cfg.offline else download_url, cfg.dataset)
    digests = movielens_digests(folder)
    check = verify_movielens(folder, cfg.dataset, cfg.allow_modified_data, digests)
    log(f"[2A] reading {folder}: {check}")
    return load_ratings(folder), load_movies(folder), f"{cfg.dataset} ({folder}); {check}", digests


def query_texts(cfg: MoviesConfig, co: CoLikes, items: pd.DataFrame) -> list[str]:
    """The configured queries; a synthetic catalogue has no Apollo 13, so there the three most-liked movies."""
    if cfg.synthetic and cfg.queries == MoviesConfig().queries:
        return [str(items["title"].iat[i]) for i in np.argsort(-co.like_counts, kind="stable")[:3]]
    return list(cfg.queries)


def resolve_queries(texts: list[str], index: TitleIndex, co: CoLikes, items: pd.DataFrame) -> list[Query]:
    """Titles -> rows of X, failing before any fitting when a title is unknown or unliked."""
    out = []
    for text in texts:
        match = index.find(text)
        if match.note:  # the most liked of several, as `embedlab recommend` and the report's explorer answer
            log(f"[2A] {text!r}: {match.title}; {match.note}")
        movie_id = match.movie_id
        row = co.index_of(movie_id)
        if row is None:
            raise nobody_liked(text, f"at >= {co.threshold} stars")
        out.append(Query(text=text, movie_id=movie_id, row=row, title=str(items["title"].iat[row])))
    return out


def memory_estimate(cfg: MoviesConfig, n_movies: int, workers: int) -> int:
    """Peak bytes of the study's largest arrays for the sizes in ``cfg``, an upper estimate.

    Per sweep worker V, its gradient, two optimiser states and two products (M x d, float32); the Lanczos
    basis of the spectral reference (M x 2d+1, float64, and a copy); EASE's dense Gram matrix, its inverse and
    weights (M x M, float64) when it runs; the held-out top-k lists (queries x k: indices, scores, hits).
    """
    d = max([cfg.dim, *cfg.dim_sweep])
    sweep = workers * 6 * n_movies * d * 4
    spectral = 2 * n_movies * (2 * d + 1) * 8
    ease = 3 * n_movies**2 * 8 if "ease" in cfg.anchors and n_movies <= cfg.ease_max_items else 0
    holdout = 4 * cfg.holdout_max_queries * cfg.top_k * 8
    return 1024**3 + sweep + spectral + ease + holdout


def check_sizes(cfg: MoviesConfig, co: CoLikes, available: int | None = None) -> None:
    """Sizes the user set that this data cannot support, refused once X's shape is known, before any fitting."""
    m = len(co.movie_ids)
    problems = [
        f"{flag} {d} is not below the number of movies with a like (M = {m:,}); the embedding and its spectral "
        "reference need d < M"
        for flag, d in (("--dim", cfg.dim), ("--dim-sweep", max(cfg.dim_sweep, default=0)))
        if d >= m
    ]
    eligible = int((co.like_counts >= cfg.min_likes).sum())
    if eligible < 2:
        problems.append(
            f"--min-likes {cfg.min_likes}: {eligible} movie(s) have that many likes (the most-liked has "
            f"{int(co.like_counts.max(initial=0)):,}), so nothing can be recommended; lower --min-likes"
        )
    if problems:
        raise InputError("; ".join(problems))
    need, have = memory_estimate(cfg, m, default_workers()), available_memory() if available is None else available
    if need > have:
        raise InputError(
            f"these sizes (d = {max([cfg.dim, *cfg.dim_sweep])}, top {cfg.top_k}, M = {m:,} movies) need about"
            f" {need / 1024**3:.1f} GiB of memory but {have / 1024**3:.1f} GiB are available; lower --dim, --dim-sweep"
            " or --top, or raise --min-likes / --like-threshold"
        )


def training_users(cfg: MoviesConfig, ratings: pd.DataFrame, co: CoLikes) -> np.ndarray:
    """Which rows of L belong to the held-out split's training users (``HoldoutSplit.make`` draws the same split), so
    that 2A's pass over X also gives ||X||_F^2 of their likes. A fraction that leaves a side of either split empty
    (the held-out users, or the training users' slice that tunes the anchors) is refused here, before any fit."""
    users = ratings["userId"].to_numpy()
    train_users, _ = split_users(users, cfg.holdout_fraction, cfg.holdout_seed, "--holdout-fraction")
    part = np.isin(co.user_ids, train_users)
    if cfg.anchors:
        try:  # the anchors' split of the training users who like something, drawn as tuned_anchors draws it
            split_users(np.arange(int(part.sum())), cfg.anchor_validation_fraction, cfg.holdout_seed + 1)
        except InputError:
            raise InputError(
                f"--holdout-fraction {cfg.holdout_fraction:g} leaves {int(part.sum()):,} training users, too few for "
                f"--anchor-validation-fraction {cfg.anchor_validation_fraction:g} to set some aside to tune "
                f"{' and '.join(a.upper() for a in cfg.anchors)}; lower --holdout-fraction (the default is 0.2)"
            ) from None
    return part


def make_operator(likes: sp.csr_matrix, fro_sq: float | None = None) -> CoLikeOperator:
    """X as L^T L - diag(n) on this rank's users (balanced by likes); counts and ||X||_F^2 of all users."""
    dist = current()
    likes = sp.csr_matrix(likes)
    counts = np.asarray(likes.sum(axis=0)).ravel()
    fro = colike_fro_sq(likes) if fro_sq is None else fro_sq
    rows = balanced_rows(np.diff(likes.indptr), dist.world, dist.rank)
    return CoLikeOperator.from_likes(
        likes[rows], fro, counts=counts, all_reduce=dist.all_reduce_sum if dist.active else None
    )


def step_2a_data(cfg: MoviesConfig) -> Prepared:
    """2A: ratings -> likes L -> what the report shows of X (computed in one pass, never whole)."""
    dist = current()
    ratings, movies, source, digests = load_tables(cfg)
    t0 = time.perf_counter()
    co = build_colikes(ratings, cfg.like_threshold)
    build_s = time.perf_counter() - t0
    check_sizes(cfg, co)
    dist.check_same("likes matrix", co.likes.indptr.tobytes() + co.likes.indices.tobytes())
    items = item_table(co, movies)
    unlisted = np.setdiff1d(co.movie_ids, movies["movieId"].to_numpy())
    if len(unlisted):
        warn(
            f"{len(unlisted):,} liked movie(s) are not in movies.csv (movieId {', '.join(map(str, unlisted[:5]))}"
            f"{', …' if len(unlisted) > 5 else ''}); kept, titled as {untitled(int(unlisted[0]))!r}"
        )
    queries = resolve_queries(
        query_texts(cfg, co, items), TitleIndex.with_likes(movies, co.movie_ids, co.like_counts), co, items
    )
    t0 = time.perf_counter()
    summary = colike_summary(co.likes, k=15, part=training_users(cfg, ratings, co))
    stats = colike_stats(ratings, len(movies), co, summary)
    result = DataStats(
        **stats,
        source=source,
        build_seconds=round(build_s, 3),
        x_summary_seconds=round(time.perf_counter() - t0, 2),
        query_likes={q.title: int(items["likes"].iat[q.row]) for q in queries},
        files_sha256=digests,
    )
    pairs = pd.DataFrame(
        [(items["title"].iat[i], items["title"].iat[j], c) for i, j, c in summary.top_pairs],
        columns=["movie A", "movie B", "users who liked both"],
    )
    query_likes = pd.DataFrame(
        {
            "query": [q.text for q in queries],
            "title": [q.title for q in queries],
            "likes": [int(items["likes"].iat[q.row]) for q in queries],
        }
    )
    out = Output(
        results=(result,),
        tables={"colike_top_pairs": Table(pairs), "query_likes": Table(query_likes)},
        artefacts={
            "items.csv": items,
            # so `recommend` can tell "unknown" from "unliked"
            "catalogue.csv": movies[["movieId", "title"]],
        },
    )
    log(
        f"[2A] {result.users:,} users, {result.likes:,} likes, M = {result.movies_with_likes:,} movies; "
        f"X (never formed): nnz {result.x_nnz:,}, max {result.x_max}"
    )
    return Prepared(ratings, movies, co, items, queries, summary, eligible_items(co.like_counts, cfg.min_likes), out)
