"""From ratings to likes: L (users x movies, 1 = liked), the like counts, and X = L^T L only in chunks.

Everything is vectorised with pandas categoricals and scipy.sparse; no Python loop over users.
Only movies with at least one like get a column: a movie nobody liked has an all-zero row of X,
its optimal vector is 0 and it would only slow the fit down.

X itself (movies x movies) grows with the square of the catalogue (about 10^9 entries at ML-32M
sizes), so it is never held whole: the fit uses X V = L^T (L V) - n * V (``objective.py``), and
what the report needs of X comes from passes that never hold it: its non-zeros and ||X||_F^2 from one
compiled pass over the pairs of likes (``gram.py``), its most co-liked pairs and the rows of the co-count
baselines from row chunks with bounded memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedlab.errors import InputError
from embedlab.movies.gram import gram_rows, gram_stats

#: Entries of X computed per chunk: bounds the memory of every chunked pass (~ 16 bytes each).
CHUNK_ENTRIES = 20_000_000


@dataclass(frozen=True)
class CoLikes:
    """The like matrix and the ids that index its rows (users) and columns (movies)."""

    likes: sp.csr_matrix  # users x movies, float32 0/1
    user_ids: np.ndarray
    movie_ids: np.ndarray
    threshold: float

    @property
    def like_counts(self) -> np.ndarray:
        """How many users liked each movie (column sums of L: the diagonal of L^T L)."""
        return np.asarray(self.likes.sum(axis=0)).ravel().astype(np.int64)

    @property
    def n_movies(self) -> int:
        return int(self.likes.shape[1])

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
    lmat.sum_duplicates()
    return lmat, np.asarray(users.categories, dtype=np.int64), np.asarray(movies.categories, dtype=np.int64)


def cooccurrence(likes: sp.spmatrix) -> sp.csr_matrix:
    """X = L^T L with the diagonal removed, materialised: the reference for tests and small data only."""
    x = (sp.csr_matrix(likes, dtype=np.float32).T @ sp.csr_matrix(likes, dtype=np.float32)).tocsr()
    x.setdiag(0)
    x.eliminate_zeros()
    x.sort_indices()
    return x


def build_colikes(ratings: pd.DataFrame, threshold: float = 4.0) -> CoLikes:
    """The data-prep step: ratings -> L (X is used only through L).

    >>> co = embedlab.build_colikes(ml.ratings, threshold=4.0)  # doctest: +SKIP
    >>> co.likes.shape, co.like_counts[:3]  # users x liked movies, and each movie's like count
    """
    if ratings.empty:
        raise InputError("the ratings table is empty")
    lmat, users, movies = like_matrix(ratings, threshold)
    if lmat.nnz == 0:
        raise InputError(f"no rating is >= {threshold}; lower --like-threshold")
    return CoLikes(likes=lmat, user_ids=users, movie_ids=movies, threshold=threshold)


def row_chunks(n_rows: int, n_cols: int, entries: int = CHUNK_ENTRIES) -> Iterator[np.ndarray]:
    """Consecutive row ranges whose dense size stays under ``entries``."""
    step = max(1, entries // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield np.arange(start, min(n_rows, start + step))


@dataclass(frozen=True)
class ColikeSummary:
    """What the report shows of X, from chunked passes: never more than a chunk in memory."""

    nnz: int
    max: int
    fro_sq: float
    top_pairs: list[tuple[int, int, int]]  # (i, j, count), i < j, largest first
    part_fro_sq: float | None = None  # ||X||_F^2 of the likes of a part of the users alone (colike_summary's ``part``)


def top_colike_pairs(likes: sp.spmatrix, k: int, entries: int = CHUNK_ENTRIES) -> list[tuple[int, int, int]]:
    """The ``k`` largest X_ij (i < j; ties by smaller i, then j), exactly, from the most-liked movies' rows only.

    X_ij <= min(n_i, n_j), and X restricted to a set S of movies is L[:, S]^T L[:, S]. So the k-th best count t among
    the 4k most-liked movies bounds the answer from below, only movies with n >= t can be in it, and the search runs on
    those movies' columns of L alone (at ML-32M's shape a few hundred of 87 k), mapped back in order.
    """
    lc = sp.csr_matrix(likes, dtype=np.float64)
    n = np.asarray(lc.sum(axis=0)).ravel()
    if k < 1 or lc.shape[1] < 2:
        return []
    head = np.sort(np.argsort(-n, kind="stable")[: 4 * k])
    pairs = _top_pairs(lc[:, head], k, entries)
    bound = pairs[-1][2] if len(pairs) == k else 1
    keep = np.flatnonzero(n >= bound)
    return [(int(keep[i]), int(keep[j]), c) for i, j, c in _top_pairs(lc[:, keep], k, entries)]


def _top_pairs(lc: sp.csr_matrix, k: int, entries: int) -> list[tuple[int, int, int]]:
    """``top_colike_pairs`` on all of ``lc``'s columns: rows visited by decreasing like count, stopped once the next
    row's n is below the k-th best count (no pair of unvisited movies can enter); each pair is taken from the row of
    whichever movie is visited first."""
    lt = lc.T.tocsr()
    n = np.diff(lt.indptr)
    order = np.argsort(-n, kind="stable")
    visit = np.empty_like(order)
    visit[order] = np.arange(len(order))
    heap: list[tuple[int, int, int]] = []  # (count, -i, -j): ties keep the smaller indices
    for pos in row_chunks(len(order), lc.shape[1], entries):
        if len(heap) == k and n[order[pos[0]]] < heap[0][0]:
            break
        rows = order[pos]
        block = gram_rows(lt, lc, rows)  # dense rows of X, zero diagonal
        new = visit[None, :] > visit[rows][:, None]  # j not visited yet: the pair is new
        # only pairs that can still enter the top k
        at, j = np.nonzero(new & (block >= (heap[0][0] if len(heap) == k else 1)))
        i, c = rows[at], block[at, j].astype(np.int64)
        i, j = np.minimum(i, j), np.maximum(i, j)
        for t in np.lexsort((j, i, -c))[:k]:  # this block's top k in the global order
            item = (int(c[t]), -int(i[t]), -int(j[t]))
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return [(-a, -b, c) for c, a, b in sorted(heap, reverse=True)]


def colike_summary(
    likes: sp.spmatrix, k: int = 15, entries: int = CHUNK_ENTRIES, part: np.ndarray | None = None
) -> ColikeSummary:
    """Non-zeros, maximum, ||X||_F^2 and the ``k`` most co-liked pairs of X, never forming X.

    One compiled pass over the pairs of likes sharing a user (``gram.gram_stats``: cost O(sum_u deg_u^2 / 2), memory
    one row of X per thread) counts the non-zeros and squares; the top pairs (and so the maximum) come from
    ``top_colike_pairs`` (row chunks of at most ``entries``). ``part``, a boolean mask over L's rows (the held-out
    split's training users), adds ||X||_F^2 of those users' likes alone, from the same pass (``part_fro_sq``).
    """
    lc = sp.csr_matrix(likes, dtype=np.float64)
    part = None if part is None else np.asarray(part, dtype=bool)
    stats = gram_stats(lc.T.tocsr(), part)
    pairs = top_colike_pairs(lc, k, entries)
    return ColikeSummary(
        nnz=stats.nnz,
        max=pairs[0][2] if pairs else 0,
        fro_sq=float(stats.sq),
        top_pairs=pairs,
        part_fro_sq=None if part is None else float(stats.part_sq),
    )


def colike_fro_sq(likes: sp.spmatrix) -> float:
    """||X||_F^2 = ||L^T L||_F^2 - sum_i n_i^2 without X, from the Gram matrix of the cheaper side.

    ||L^T L||_F = ||L L^T||_F. The movie side costs sum_u deg_u^2 / 2 increments, the user side sum_i n_i^2 / 2 (pairs
    of likes sharing a user, resp. a movie); the side with the smaller sum is computed (ml-latest-small: users;
    ML-32M: movies). Off the user side's diagonal lies ||L L^T||_F^2 - sum_u deg_u^2.
    """
    lc = sp.csr_matrix(likes, dtype=np.float64)
    deg_u = np.diff(lc.indptr).astype(np.float64)
    n = np.asarray(lc.sum(axis=0)).ravel()
    if float(deg_u @ deg_u) <= float(n @ n):
        return float(gram_stats(lc.T.tocsr()).sq)
    return float(gram_stats(lc).sq) + float(deg_u @ deg_u) - float(n @ n)


def colike_stats(
    ratings: pd.DataFrame, n_movies_catalogue: int, co: CoLikes, summary: ColikeSummary
) -> dict[str, float | int]:
    """The headline numbers of the data-prep step."""
    m = co.n_movies
    deg = np.diff(co.likes.indptr).astype(np.int64)
    return {
        "like_threshold": co.threshold,
        "users": int(ratings["userId"].nunique()),
        "movies_in_catalogue": int(n_movies_catalogue),
        "movies_rated": int(ratings["movieId"].nunique()),
        "ratings": int(len(ratings)),
        "likes": int(co.likes.nnz),
        "users_with_likes": int(co.likes.shape[0]),
        "movies_with_likes": int(m),
        "x_nnz": int(summary.nnz),
        "x_density": float(summary.nnz / (m * (m - 1))) if m > 1 else 0.0,
        "x_max": int(summary.max),
        "x_sum_pairs": int((deg * (deg - 1)).sum() // 2),
        "x_fro_sq": float(summary.fro_sq),
    }
