"""The movie study's tables: the item table (X's rows as movies), top-k lists, the sweep and its loss histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from embedlab.movies.cooccurrence import CoLikes
from embedlab.movies.movielens import NO_GENRES, untitled
from embedlab.movies.recommend import similar_items
from embedlab.movies.train import RunResult


def item_table(co: CoLikes, movies: pd.DataFrame) -> pd.DataFrame:
    """One row per movie of X, in X's order: movieId, title, year, genres, likes."""
    items = pd.DataFrame({"movieId": co.movie_ids, "likes": co.like_counts})
    items = items.merge(movies, on="movieId", how="left", validate="one_to_one")
    items["title"] = items["title"].fillna(items["movieId"].map(untitled))
    items["genres"] = items["genres"].fillna(NO_GENRES)
    return items[["movieId", "title", "year", "genres", "likes"]]


def genre_matrix(genres: pd.Series) -> torch.Tensor:
    """(M, G) bool multi-hot of the '|'-separated genres."""
    dummies = genres.str.get_dummies(sep="|")
    dummies = dummies.drop(columns=[NO_GENRES], errors="ignore")
    return torch.from_numpy(dummies.to_numpy().astype(bool))


def most_specific_genre(genres: pd.Series) -> np.ndarray:
    """Each movie's rarest genre among its own: MovieLens lists genres alphabetically, so the first
    listed one says little (Toy Story would be 'Adventure'); the rarest (here 'Animation' or
    'Children') is the informative colour."""
    dummies = genres.str.get_dummies(sep="|")
    freq = dummies.sum(axis=0)
    rarity = dummies.where(dummies > 0) * freq  # NaN where absent
    return rarity.idxmin(axis=1).to_numpy()


def recommendation_table(
    v: torch.Tensor, row: int, items: pd.DataFrame, eligible: torch.Tensor, k: int, metric: str
) -> tuple[pd.DataFrame, list[int]]:
    """Top-k table for one query (rank, title, year, genres, similarity, likes) and the rows of ``items`` it lists."""
    idx, scores = similar_items(v, row, k, eligible, metric)
    return top_table(items, idx, scores), [int(i) for i in idx]


def top_table(
    items: pd.DataFrame,
    idx: np.ndarray,
    scores: np.ndarray,
    columns: tuple[str, ...] = ("title", "year", "genres"),
) -> pd.DataFrame:
    """The rows ``idx`` of ``items`` as a ranked list: rank, ``columns``, the similarity and ``likes`` (how many users
    liked the movie); the one top-k table builder (the study's tables, ``embedlab recommend`` and the Python API)."""
    df = items.iloc[idx][[*columns, "likes"]].reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df.insert(len(columns) + 1, "similarity", np.round(scores.astype(float), 4))
    return df


def sweep_table(results: list[RunResult], c_star: float, converged_gap: float) -> pd.DataFrame:
    """One row per run of the sweep: setting, verdict, iterations, final cost, gap to the optimum in per cent, time."""
    return pd.DataFrame(
        [
            {
                "optimizer": r.optimizer,
                "lr": r.lr,
                "status": r.verdict(c_star, converged_gap),
                "iterations": r.iterations,
                "final_cost": r.final_loss,
                "gap_to_optimum_%": 100 * r.gap(c_star),
                "seconds": round(r.seconds, 2),
            }
            for r in results
        ]
    )


def loss_histories(results: list[RunResult]) -> pd.DataFrame:
    """Every run's cost by iteration, long format (what the loss figures are drawn from)."""
    return pd.concat(
        [
            pd.DataFrame(
                {"optimizer": r.optimizer, "lr": r.lr, "iteration": np.arange(len(r.losses)), "cost": r.losses}
            )
            for r in results
        ]
    )
