"""From ratings to likes: L (users x movies, 1 = liked), the like counts, and X = L^T L only in chunks.

Everything is vectorised with pandas categoricals and scipy.sparse; no Python loop over users.
Only movies with at least one like get a column: a movie nobody liked has an all-zero row of X,
its optimal vector is 0 and it would only slow the fit down.

X itself (movies x movies) grows with the square of the catalogue (about 10^9 entries at ML-32M
sizes), so it is never held whole: the fit uses X V = L^T (L V) - n * V (``objective.py``), and
what the report needs of X (its non-zeros, maximum, ||X||_F^2, most co-liked pairs, the rows of
the co-count baselines) comes from passes over row chunks with bounded memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

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
    """The data-prep step: ratings -> L (X is used only through L)."""
    if ratings.empty:
        raise ValueError("the ratings table is empty")
    lmat, users, movies = like_matrix(ratings, threshold)
    if lmat.nnz == 0:
        raise ValueError(f"no rating is >= {threshold}; lower --like-threshold")
    return CoLikes(likes=lmat, user_ids=users, movie_ids=movies, threshold=threshold)


def colike_rows(likes_t: sp.csr_matrix, likes: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Rows ``rows`` of X = L^T L - diag(n), from L^T (movies x users, CSR) and L (CSR)."""
    block = (likes_t[rows] @ likes).tocsr()
    row_of = np.repeat(np.asarray(rows), np.diff(block.indptr))
    block.data[block.indices == row_of] = 0  # the diagonal n_i, in place: no rebuild and re-sort of the block
    block.eliminate_zeros()
    return block


def row_chunks(n_rows: int, n_cols: int, entries: int = CHUNK_ENTRIES) -> Iterator[np.ndarray]:
    """Consecutive row ranges whose dense size stays under ``entries``."""
    step = max(1, entries // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield np.arange(start, min(n_rows, start + step))


@dataclass(frozen=True)
class ColikeSummary:
    """What the report shows of X, from one chunked pass: never more than a chunk in memory."""

    nnz: int
    max: int
    fro_sq: float
    top_pairs: list[tuple[int, int, int]]  # (i, j, count), i < j, largest first


def colike_summary(likes: sp.spmatrix, k: int = 15, entries: int = CHUNK_ENTRIES) -> ColikeSummary:
    """Non-zeros, maximum, ||X||_F^2 and the ``k`` most co-liked pairs of X, in row chunks.

    Cost O(sum_u deg_u^2) (every co-like of every user once), memory O(chunk rows x M).
    """
    lc = sp.csr_matrix(likes, dtype=np.float32)
    lt = lc.T.tocsr()
    m = lc.shape[1]
    nnz, top, fro = 0, 0, 0.0
    heap: list[tuple[int, int, int]] = []  # (count, -i, -j): ties keep the smaller indices
    for rows in row_chunks(m, m, entries):
        block = colike_rows(lt, lc, rows).tocoo()
        if block.nnz == 0:
            continue
        data = block.data.astype(np.float64)
        nnz += block.nnz
        top = max(top, int(data.max()))
        fro += float(np.dot(data, data))
        i = rows[block.row]
        upper = block.col > i
        cand_c, cand_i, cand_j = data[upper], i[upper], block.col[upper]
        if len(heap) == k:  # only pairs that can still enter the global top k
            keep = cand_c >= heap[0][0]
            cand_c, cand_i, cand_j = cand_c[keep], cand_i[keep], cand_j[keep]
        if len(cand_c) > k:  # this block's top k by (count desc, i, j): ties resolved like the global order
            kth = np.partition(cand_c, len(cand_c) - k)[len(cand_c) - k]
            above = np.flatnonzero(cand_c > kth)
            ties = np.flatnonzero(cand_c == kth)
            ties = ties[np.lexsort((cand_j[ties], cand_i[ties]))[: k - len(above)]]
            part = np.concatenate([above, ties])
            cand_c, cand_i, cand_j = cand_c[part], cand_i[part], cand_j[part]
        for c, a, b in zip(cand_c, cand_i, cand_j):
            item = (int(c), -int(a), -int(b))
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    pairs = sorted(heap, reverse=True)
    return ColikeSummary(nnz=nnz, max=top, fro_sq=fro, top_pairs=[(-a, -b, c) for c, a, b in pairs])


def colike_fro_sq(likes: sp.spmatrix, entries: int = CHUNK_ENTRIES) -> float:
    """||X||_F^2 = ||L^T L||_F^2 - sum_i n_i^2 without X: the Gram matrix of the cheaper side, in chunks.

    ||L^T L||_F = ||L L^T||_F; the movie side costs sum_u deg_u^2, the user side sum_i n_i^2
    (pairs of likes sharing a user, resp. a movie), so the smaller of the two is computed.
    """
    lc = sp.csr_matrix(likes, dtype=np.float32)
    deg_u = np.diff(lc.indptr).astype(np.float64)
    n = np.asarray(lc.sum(axis=0)).ravel().astype(np.float64)
    a = lc.T.tocsr() if float(deg_u @ deg_u) <= float(n @ n) else lc  # rows of the Gram we build
    at = a.T.tocsr()
    total = 0.0
    for rows in row_chunks(a.shape[0], a.shape[0], entries):
        block = (a[rows] @ at).tocsr()
        d = block.data.astype(np.float64)
        total += float(d @ d)
    return total - float(n @ n)


def colike_stats(ratings: pd.DataFrame, n_movies_catalogue: int, co: CoLikes, summary: ColikeSummary) -> dict[str, float | int]:
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
