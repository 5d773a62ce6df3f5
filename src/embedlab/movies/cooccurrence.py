"""From ratings to the co-like matrix: L (users x movies, 1 = liked) and X = L^T L, zero diagonal.

Everything is vectorised with pandas categoricals and scipy.sparse; no Python loop over users.
Only movies with at least one like get a row of X: a movie nobody liked has an all-zero row, its
optimal vector is 0 and it would only slow the fit down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass(frozen=True)
class CoLikes:
    """The like matrix, the co-like matrix and the ids that index their rows and columns."""

    likes: sp.csr_matrix  # users x movies, float32 0/1
    x: sp.csr_matrix  # movies x movies, float32 counts, symmetric, zero diagonal
    user_ids: np.ndarray
    movie_ids: np.ndarray
    threshold: float

    @property
    def like_counts(self) -> np.ndarray:
        """How many users liked each movie (column sums of L)."""
        return np.asarray(self.likes.sum(axis=0)).ravel().astype(np.int64)

    def index_of(self, movie_id: int) -> int | None:
        """Row of ``movie_id`` in X, or None when nobody liked it."""
        pos = int(np.searchsorted(self.movie_ids, movie_id))
        if pos < len(self.movie_ids) and self.movie_ids[pos] == movie_id:
            return pos
        return None


def like_matrix(ratings: pd.DataFrame, threshold: float) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse L with L[u, m] = 1 when user u rated movie m at least ``threshold``.

    Returns (L, user_ids, movie_ids) with ids sorted ascending; duplicated ratings count once.
    """
    liked = ratings.loc[ratings["rating"] >= threshold, ["userId", "movieId"]].drop_duplicates()
    users = pd.Categorical(liked["userId"])
    movies = pd.Categorical(liked["movieId"])
    data = np.ones(len(liked), dtype=np.float32)
    shape = (len(users.categories), len(movies.categories))
    lmat = sp.csr_matrix((data, (users.codes, movies.codes)), shape=shape)
    return lmat, np.asarray(users.categories, dtype=np.int64), np.asarray(movies.categories, dtype=np.int64)


def cooccurrence(likes: sp.spmatrix) -> sp.csr_matrix:
    """X = L^T L with the diagonal (each movie's own like count) removed, as float32 CSR."""
    x = (sp.csr_matrix(likes, dtype=np.float32).T @ sp.csr_matrix(likes, dtype=np.float32)).tocsr()
    x.setdiag(0)
    x.eliminate_zeros()
    x.sort_indices()
    return x


def build_colikes(ratings: pd.DataFrame, threshold: float = 4.0) -> CoLikes:
    """The whole data-prep step: ratings -> L -> X."""
    if ratings.empty:
        raise ValueError("the ratings table is empty")
    lmat, users, movies = like_matrix(ratings, threshold)
    if lmat.nnz == 0:
        raise ValueError(f"no rating is >= {threshold}; lower --like-threshold")
    return CoLikes(likes=lmat, x=cooccurrence(lmat), user_ids=users, movie_ids=movies, threshold=threshold)


def top_pairs(x: sp.spmatrix, k: int) -> list[tuple[int, int, int]]:
    """The ``k`` most co-liked pairs (i < j, count), largest first."""
    upper = sp.triu(x, k=1).tocoo()
    if upper.nnz == 0:
        return []
    order = np.argsort(-upper.data, kind="stable")[:k]
    return [(int(upper.row[o]), int(upper.col[o]), int(upper.data[o])) for o in order]


def colike_stats(ratings: pd.DataFrame, n_movies_catalogue: int, co: CoLikes) -> dict[str, float | int]:
    """The headline numbers of the data-prep step."""
    m = co.x.shape[0]
    return {
        "like_threshold": co.threshold,
        "users": int(ratings["userId"].nunique()),
        "movies_in_catalogue": int(n_movies_catalogue),
        "movies_rated": int(ratings["movieId"].nunique()),
        "ratings": int(len(ratings)),
        "likes": int(co.likes.nnz),
        "users_with_likes": int(co.likes.shape[0]),
        "movies_with_likes": int(m),
        "x_nnz": int(co.x.nnz),
        "x_density": float(co.x.nnz / (m * (m - 1))) if m > 1 else 0.0,
        "x_max": int(co.x.max()) if co.x.nnz else 0,
        "x_sum_pairs": int(co.x.sum() // 2),
    }
