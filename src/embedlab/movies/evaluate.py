"""Held-out evaluation of item-to-item recommendations on users the embedding never saw.

For every test user u and every movie m they liked, recommend the top-k for m and count how many
of u's *other* liked movies are among them. Any scorer (embeddings, raw co-likes, normalised
co-likes) is judged by the same code, so the numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from embedlab.movies.recommend import top_k

Scorer = Callable[[torch.Tensor], torch.Tensor]  # item indices (q,) -> scores (q, M)


def split_users(user_ids: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of user ids into (train, test)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    ids = np.unique(np.asarray(user_ids))
    rng = np.random.default_rng(seed)
    test = rng.random(len(ids)) < test_fraction
    if test.all() or not test.any():
        raise ValueError(f"{len(ids)} users cannot be split with test fraction {test_fraction}")
    return ids[~test], ids[test]


@dataclass(frozen=True)
class Queries:
    """(user, item) query pairs of the test users and each test user's liked items (mask)."""

    items: torch.Tensor  # (n,) item index of each query
    users: torch.Tensor  # (n,) row of that query's user in ``liked``
    liked: torch.Tensor  # (n_test_users, M) bool


def build_queries(test_likes: sp.spmatrix) -> Queries:
    """Every liked item of every test user with at least two liked items is one query."""
    liked = torch.from_numpy(np.asarray(sp.csr_matrix(test_likes).toarray() > 0))
    enough = liked.sum(dim=1) >= 2
    users, items = torch.nonzero(liked & enough[:, None], as_tuple=True)
    return Queries(items=items, users=users, liked=liked)


def cosine_scorer(v: torch.Tensor) -> Scorer:
    vn = torch.nn.functional.normalize(v, dim=1, eps=1e-12)
    return lambda q: vn[q] @ vn.T


def colike_scorer(x: sp.spmatrix, like_counts: np.ndarray | None = None) -> Scorer:
    """Rows of X (raw co-like counts), or X_ij / sqrt(n_i n_j) when ``like_counts`` is given."""
    xs = sp.csr_matrix(x, dtype=np.float32)
    norm = None if like_counts is None else torch.from_numpy(np.sqrt(np.maximum(like_counts, 1)).astype(np.float32))

    def score(q: torch.Tensor) -> torch.Tensor:
        rows = torch.from_numpy(xs[q.numpy()].toarray())
        if norm is not None:
            rows = rows / norm[q][:, None] / norm[None, :]
        return rows

    return score


def evaluate_scorer(
    scorer: Scorer,
    queries: Queries,
    k: int,
    eligible: torch.Tensor,
    like_counts: np.ndarray,
    genres: torch.Tensor,
    chunk: int = 512,
) -> dict[str, float]:
    """HitRate@k (share of queries with at least one hit), mean hits@k, precision@k, popularity, genre overlap@k.

    ``genres`` is an (M, G) bool multi-hot matrix; genre overlap@k is the share of recommended
    movies that share at least one genre with the query movie.
    """
    unique_items = torch.unique(queries.items)
    recs = torch.full((int(queries.liked.shape[1]), k), -1, dtype=torch.long)
    for start in range(0, len(unique_items), chunk):
        q = unique_items[start : start + chunk]
        idx, _ = top_k(scorer(q), q, k, eligible)
        recs[q] = idx
    r = recs[queries.items]  # (n, k)
    valid = r >= 0
    r0 = r.clamp(min=0)
    hit = queries.liked[queries.users[:, None], r0] & valid
    hits = hit.sum(dim=1).float()
    counts = torch.as_tensor(np.asarray(like_counts), dtype=torch.float32)
    overlap = (genres[r0] & genres[queries.items][:, None, :]).any(dim=2) & valid
    n_valid = valid.sum().clamp(min=1).float()
    return {
        f"hit_rate@{k}": float((hits > 0).float().mean()),
        f"mean_hits@{k}": float(hits.mean()),
        f"precision@{k}": float((hits / k).mean()),
        "mean_popularity": float((counts[r0] * valid).sum() / n_valid),
        f"genre_overlap@{k}": float(overlap.sum() / n_valid),
        "queries": int(len(queries.items)),
    }
