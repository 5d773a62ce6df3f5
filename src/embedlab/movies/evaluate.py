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

from embedlab.errors import InputError
from embedlab.movies.gram import gram_rows
from embedlab.movies.recommend import top_k

Scorer = Callable[[torch.Tensor], torch.Tensor]  # item indices (q,) -> scores (q, M)
Scorers = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # several methods scored from one shared computation


def at_k(metric: str, k: int) -> str:
    """A metric's key at top ``k`` ("hit_rate@10"): the one spelling of the keys of ``score_recs``, the tables and the
    report."""
    return f"{metric}@{k}"


def split_users(
    user_ids: np.ndarray, test_fraction: float, seed: int, flag: str = "test fraction"
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of user ids into (train, test); ``flag`` names the fraction in the message of a split that
    leaves one side empty."""
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"{flag} must be in (0, 1), got {test_fraction}")
    ids = np.unique(np.asarray(user_ids))
    rng = np.random.default_rng(seed)
    test = rng.random(len(ids)) < test_fraction
    if test.all() or not test.any():
        side = "none on the other side" if test.all() else "none set aside"
        raise InputError(
            f"{flag} {test_fraction:g} splits {len(ids):,} users with {side}; choose a fraction that leaves users on "
            "both sides (the default is 0.2)"
        )
    return ids[~test], ids[test]


@dataclass(frozen=True)
class Queries:
    """(user, item) query pairs of the test users, and every test user's likes as sorted keys.

    A like (u, i) is the key u * M + i, so membership tests need no dense users x movies matrix
    (40 k test users x 87 k movies would be 3.5 GB at ML-32M sizes).
    """

    items: torch.Tensor  # (n,) item index of each query
    users: torch.Tensor  # (n,) test-user row of that query
    like_keys: torch.Tensor  # sorted int64 keys u * n_items + i of every test like
    n_items: int
    user_likes: torch.Tensor  # (test users,) how many movies each test user liked

    def liked(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool tensor: did ``users`` like ``items`` (same shapes, broadcast)?"""
        keys = users.long() * self.n_items + items.long()
        pos = torch.searchsorted(self.like_keys, keys).clamp(max=max(len(self.like_keys) - 1, 0))
        return (self.like_keys[pos] == keys) if len(self.like_keys) else torch.zeros_like(keys, dtype=torch.bool)

    def sample(self, max_queries: int, seed: int) -> Queries:
        """At most ``max_queries`` of the queries, a seeded uniform sample (all of them when fewer).

        Uniform over (user, movie) queries keeps every rate an unbiased estimate of the full one;
        it bounds the co-count baselines' cost, which grows with the distinct query movies' rows of X.
        """
        if len(self.items) <= max_queries:
            return self
        pick = torch.from_numpy(
            np.sort(np.random.default_rng(seed).choice(len(self.items), max_queries, replace=False))
        )
        return Queries(
            items=self.items[pick],
            users=self.users[pick],
            like_keys=self.like_keys,
            n_items=self.n_items,
            user_likes=self.user_likes,
        )


def build_queries(test_likes: sp.spmatrix) -> Queries:
    """Every liked item of every test user with at least two liked items is one query."""
    lc = sp.csr_matrix(test_likes)
    lc.eliminate_zeros()
    lc.sort_indices()
    deg = np.diff(lc.indptr)
    users = np.repeat(np.arange(lc.shape[0]), deg)
    items = lc.indices.astype(np.int64)
    keys = users.astype(np.int64) * lc.shape[1] + items
    enough = deg[users] >= 2
    return Queries(
        items=torch.from_numpy(items[enough]),
        users=torch.from_numpy(users[enough]),
        like_keys=torch.from_numpy(np.sort(keys)),
        n_items=int(lc.shape[1]),
        user_likes=torch.from_numpy(deg.astype(np.int64)),
    )


def cosine_scorer(v: torch.Tensor) -> Scorer:
    vn = torch.nn.functional.normalize(v, dim=1, eps=1e-12)
    return lambda q: vn[q] @ vn.T


def colike_scorers(likes: sp.spmatrix, like_counts: np.ndarray) -> Scorers:
    """Raw co-like counts X_ij and the normalised X_ij / sqrt(n_i n_j), from one computation of X's rows.

    Rows are computed from L for each chunk of queries: X is never formed whole, and its rows,
    the costly part at catalogue scale, are computed once for both baselines.
    """
    lc = sp.csr_matrix(likes, dtype=np.float32)
    lt = lc.T.tocsr()
    norm = torch.from_numpy(np.sqrt(np.maximum(like_counts, 1)).astype(np.float32))

    def score(q: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(gram_rows(lt, lc, q.numpy()))
        normalised = (rows / norm[q][:, None]).div_(norm[None, :])  # one new block, not two
        return {"co-likes raw X_ij": rows, "co-likes X_ij/sqrt(n_i n_j)": normalised}

    return score


def recommend_all_multi(
    scorers: Scorers, queries: Queries, k: int, eligible: torch.Tensor, chunk: int = 512
) -> dict[str, torch.Tensor]:
    """The top-k list (n, k) of every query for every method of ``scorers``, each distinct query item scored once."""
    unique_items = torch.unique(queries.items)
    recs: dict[str, torch.Tensor] = {}
    for start in range(0, len(unique_items), chunk):
        q = unique_items[start : start + chunk]
        for name, scores in scorers(q).items():
            recs.setdefault(name, torch.full((queries.n_items, k), -1, dtype=torch.long))[q] = top_k(
                scores, q, k, eligible
            )[0]
    return {name: r[queries.items] for name, r in recs.items()}


def recommend_all(scorer: Scorer, queries: Queries, k: int, eligible: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """The top-k list (n, k) of every query, each distinct query item scored once."""
    recs = recommend_all_multi(lambda q: {"": scorer(q)}, queries, k, eligible, chunk)
    return recs[""] if recs else torch.full((len(queries.items), k), -1, dtype=torch.long)


def recall_at_k(recs: torch.Tensor, queries: Queries, mask: torch.Tensor | None = None) -> float:
    """Mean over the queries (those in ``mask``) of hits / min(k, the user's other liked movies)."""
    users = queries.users if mask is None else queries.users[mask]
    recs = recs if mask is None else recs[mask]
    return _recall(_hits(recs, queries, users).sum(dim=1).float(), queries, users, recs.shape[1])


def _hits(recs: torch.Tensor, queries: Queries, users: torch.Tensor) -> torch.Tensor:
    """(n, k) bool: the recommended movie is one the query's user liked (a -1 padding slot never is)."""
    return queries.liked(users[:, None], recs.clamp(min=0)) & (recs >= 0)


def _recall(hits: torch.Tensor, queries: Queries, users: torch.Tensor, k: int) -> float:
    others = (queries.user_likes[users] - 1).clamp(min=1, max=k).float()
    return float((hits / others).sum() / max(len(hits), 1))


def score_recs(
    recs: torch.Tensor,
    queries: Queries,
    like_counts: np.ndarray,
    genres: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> dict[str, float]:
    """HitRate@k (share of queries with at least one hit), mean hits@k, precision@k, Recall@k, popularity, genre
    overlap@k.

    Recall@k is hits / min(k, the user's other liked movies): unlike HitRate@k it is not saturated
    by recommending popular movies to users who liked many.

    ``mask`` picks a subset of the queries (e.g. by the query movie's like count).
    ``genres`` is an (M, G) bool multi-hot matrix; genre overlap@k is the share of recommended
    movies that share at least one genre with the query movie.
    """
    items, users = queries.items, queries.users
    if mask is not None:
        recs, items, users = recs[mask], items[mask], users[mask]
    k = recs.shape[1]
    valid = recs >= 0
    r0 = recs.clamp(min=0)
    hits = _hits(recs, queries, users).sum(dim=1).float()
    recall = _recall(hits, queries, users, k)
    counts = torch.as_tensor(np.asarray(like_counts), dtype=torch.float32)
    overlap = (genres[r0] & genres[items][:, None, :]).any(dim=2) & valid
    n_valid = valid.sum().clamp(min=1).float()
    n = max(len(items), 1)
    return {
        at_k("hit_rate", k): float((hits > 0).float().sum() / n),
        at_k("mean_hits", k): float(hits.sum() / n),
        at_k("precision", k): float((hits / k).sum() / n),
        at_k("recall", k): recall,
        "mean_popularity": float((counts[r0] * valid).sum() / n_valid),
        at_k("genre_overlap", k): float(overlap.sum() / n_valid),
        "queries": int(len(items)),
    }


#: Like-count buckets of the query movie for the cold-start table: [low, high).
COLD_START_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("< 10 likes", 0, 10),
    ("10-100 likes", 10, 101),
    ("> 100 likes", 101, float("inf")),
)


def bucket_masks(queries: Queries, like_counts: np.ndarray) -> dict[str, torch.Tensor]:
    """Query masks by the query movie's like count among the training users."""
    n = torch.as_tensor(np.asarray(like_counts))[queries.items]
    return {name: (n >= lo) & (n < hi) for name, lo, hi in COLD_START_BUCKETS}
