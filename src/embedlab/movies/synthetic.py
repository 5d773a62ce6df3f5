"""Synthetic MovieLens-shaped ratings: the real pipeline at catalogue sizes that cannot be downloaded here.

The shape (users, movies, ratings) is a named release's or a multiple of ml-latest-small's. The
distributions are fitted to ml-latest-small (``fit_shape_parameters``; a test re-fits them on the
real data): user activity is 20 + log-normal (MovieLens keeps users with >= 20 ratings), movie
popularity is log-normal, star values follow the release's histogram. For recommendations to have
something to find, users and movies belong to one of ``groups`` taste groups (named as the movies'
genre) and half of a user's ratings go to movies of their own group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedlab.data import available_memory, shape_of  # the published shapes live with the datasets
from embedlab.errors import InputError

#: Fitted on ml-latest-small (``fit_shape_parameters``): sd of log(ratings per user - 19) and of
#: log(ratings per movie); share of each star value 0.5 .. 5.0.
USER_LOG_SD = 1.625
MOVIE_LOG_SD = 1.314
STARS = np.arange(1, 11) / 2
STAR_SHARES = np.array([0.0136, 0.0279, 0.0178, 0.0749, 0.0550, 0.1988, 0.1303, 0.2660, 0.0848, 0.1310])

#: Peak bytes per rating of generation + the movie study (measured in bench/movies_scale.py, rounded up).
BYTES_PER_RATING = 80
FIXED_BYTES = 2 * 1024**3


class SyntheticSizeError(InputError):
    """The requested synthetic dataset would not fit in this machine's memory."""


def estimate_bytes(n_ratings: int) -> int:
    """Peak memory of generating ``n_ratings`` and running the movie study on them."""
    return FIXED_BYTES + BYTES_PER_RATING * n_ratings


def check_fits(name: str, available: int | None = None) -> tuple[int, int, int]:
    """The shape of ``name``, or SyntheticSizeError with the estimate when it would not fit in memory."""
    shape = shape_of(name)
    need = estimate_bytes(shape[2])
    have = available_memory() if available is None else available
    if need > have:
        raise SyntheticSizeError(
            f"--synthetic {name} ({shape[0]:,} users, {shape[1]:,} movies, {shape[2]:,} ratings) needs about"
            f" {need / 1024**3:.1f} GiB but {have / 1024**3:.1f} GiB are available; pick a smaller size (e.g. ml-32m or"
            " 64x)"
        )
    return shape


@dataclass(frozen=True)
class SyntheticData:
    ratings: pd.DataFrame  # userId, movieId (int32), rating (float32)
    movies: pd.DataFrame  # movieId, title, genres
    name: str


def generate(name: str, seed: int = 0, groups: int = 20, in_group: float = 0.5, rounds: int = 12) -> SyntheticData:
    """Ratings and a movie table of the shape ``name``; deterministic for a seed.

    Movies are drawn with replacement, so a heavy user draws popular movies twice; the repeats are
    dropped and the missing ratings redrawn, ``rounds`` times at most, so each user ends close to
    their drawn activity (a (user, movie) pair is rated once, as in MovieLens).
    """
    n_users, n_movies, n_ratings = shape_of(name)
    rng = np.random.default_rng(seed)
    # user activity: 20 + log-normal excess, scaled so that the total matches the target
    excess = rng.lognormal(0.0, USER_LOG_SD, n_users)
    excess *= max(n_ratings - 20 * n_users, 0) / excess.sum()
    target = np.minimum(20 + np.floor(excess).astype(np.int64), n_movies // 2)
    pop = rng.lognormal(0.0, MOVIE_LOG_SD, n_movies)
    movie_group = rng.integers(0, groups, n_movies)
    user_group = rng.integers(0, groups, n_users)
    cdfs = _group_cdfs(pop, movie_group, groups)
    keys = np.empty(0, dtype=np.int64)
    need = target
    for _ in range(rounds):
        users = np.repeat(np.arange(n_users, dtype=np.int64), need)
        movies = _draw_movies(rng, users, user_group, pop, cdfs, in_group)
        keys = _sorted_unique(np.concatenate([keys, users * n_movies + movies]))  # one rating per (user, movie)
        need = np.maximum(target - np.bincount(keys // n_movies, minlength=n_users), 0)
        if need.sum() <= 0.002 * target.sum():
            break
    ratings = pd.DataFrame(
        {
            "userId": (keys // n_movies + 1).astype(np.int32),
            "movieId": (keys % n_movies + 1).astype(np.int32),
            "rating": rng.choice(STARS, size=len(keys), p=STAR_SHARES / STAR_SHARES.sum()).astype(np.float32),
        }
    )
    ids = np.arange(1, n_movies + 1)
    table = pd.DataFrame(
        {
            "movieId": ids,
            "title": [f"Synthetic movie {i} (2000)" for i in ids],
            "genres": [f"Group{g:02d}" for g in movie_group],
        }
    )
    return SyntheticData(ratings=ratings, movies=table, name=name)


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique for a sorted array with a few unsorted keys appended: a stable (merge) sort handles that
    in one pass, while np.unique's default sort was seen taking minutes on 32 M such keys."""
    s = np.sort(keys, kind="stable")
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s


def _group_cdfs(pop: np.ndarray, movie_group: np.ndarray, groups: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per taste group: its movies and the cumulative popularity to draw them by."""
    out = []
    for g in range(groups):
        members = np.flatnonzero(movie_group == g)
        out.append((members, np.cumsum(pop[members]) / max(pop[members].sum(), 1e-300)))
    return out


def _draw_movies(
    rng: np.random.Generator,
    users: np.ndarray,
    user_group: np.ndarray,
    pop: np.ndarray,
    cdfs: list[tuple[np.ndarray, np.ndarray]],
    in_group: float,
) -> np.ndarray:
    """One movie per entry of ``users``: from the user's own group with probability ``in_group``, else from all, by
    popularity."""
    movies = np.empty(len(users), dtype=np.int64)
    own = rng.random(len(users)) < in_group
    cdf = np.cumsum(pop) / pop.sum()
    movies[~own] = np.searchsorted(cdf, rng.random(int((~own).sum())), side="right").clip(max=len(pop) - 1)
    groups_of = user_group[users]
    for g, (members, gcdf) in enumerate(cdfs):
        sel = own & (groups_of == g)
        if not sel.any():
            continue
        if members.size == 0:
            movies[sel] = np.searchsorted(cdf, rng.random(int(sel.sum())), side="right").clip(max=len(pop) - 1)
            continue
        movies[sel] = members[
            np.searchsorted(gcdf, rng.random(int(sel.sum())), side="right").clip(max=len(members) - 1)
        ]
    return movies


def fit_shape_parameters(ratings: pd.DataFrame) -> dict[str, float | list[float]]:
    """The constants above, measured on a ratings table (ml-latest-small for the shipped values)."""
    per_user = ratings.groupby("userId").size().to_numpy()
    per_movie = ratings.groupby("movieId").size().to_numpy()
    shares = ratings["rating"].value_counts(normalize=True).reindex(STARS, fill_value=0.0)
    return {
        "user_log_sd": float(np.log(per_user - 19).std()),
        "movie_log_sd": float(np.log(per_movie).std()),
        "star_shares": [float(s) for s in shares],
    }
