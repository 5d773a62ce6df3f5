"""Item-to-item recommendations from embeddings (in the spirit of ``implicit``'s ``similar_items``).

Default: cosine similarity, which compares directions only. The raw dot product v_i . v_j
approximates the co-like count itself, so it favours movies that many people liked: a popularity
bias that pushes blockbusters onto every list. Movies with fewer than ``min_likes`` likes are never
recommended: their vectors are near zero, so their direction is mostly noise from the random start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from embedlab.config import SIMILARITY_METRICS as METRICS  # noqa: E402 - the names live on the ground floor
from embedlab.errors import InputError


def similarity(v: torch.Tensor, queries: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Scores (len(queries), M) between the query rows of ``v`` and every row."""
    if metric not in METRICS:
        raise InputError(f"unknown similarity {metric!r}; choose from {', '.join(METRICS)}")
    if metric == "cosine":
        v = torch.nn.functional.normalize(v, dim=1, eps=1e-12)
    return v[queries] @ v.T


def eligible_items(like_counts: np.ndarray | torch.Tensor, min_likes: int) -> torch.Tensor:
    """Boolean mask of the movies that may be recommended (at least ``min_likes`` likes)."""
    return torch.as_tensor(np.array(like_counts)) >= min_likes  # a copy: pandas arrays may be read-only


def top_k(
    scores: torch.Tensor, queries: torch.Tensor, k: int, eligible: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and scores of the ``k`` best items per row, never the query itself nor an ineligible item.

    Rows with fewer than ``k`` admissible items are padded with index -1 and score -inf.
    """
    s = scores if scores.is_floating_point() else scores.float()
    # a new tensor, in one pass
    s = torch.where(eligible[None, :], s, -torch.inf) if eligible is not None else s.clone()
    s[torch.arange(len(queries)), queries] = -torch.inf
    k_eff = min(k, s.shape[1])
    vals, idx = torch.topk(s, k_eff, dim=1)
    idx = torch.where(torch.isfinite(vals), idx, torch.full_like(idx, -1))
    if k_eff < k:
        pad = k - k_eff
        idx = torch.cat([idx, torch.full((len(idx), pad), -1, dtype=idx.dtype)], dim=1)
        vals = torch.cat([vals, torch.full((len(vals), pad), -torch.inf)], dim=1)
    return idx, vals


def similar_items(
    v: torch.Tensor,
    item: int,
    k: int = 10,
    eligible: torch.Tensor | None = None,
    metric: str = "cosine",
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items most similar to ``item``: (indices, scores), best first, padding dropped.

    Scores are computed in float64, as report.html's explorer does, so both order near-ties alike.
    """
    q = torch.tensor([item])
    idx, vals = top_k(similarity(v.double(), q, metric), q, k, eligible)
    keep = idx[0] >= 0
    return idx[0][keep].numpy(), vals[0][keep].numpy()


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|A ∩ B| / |A ∪ B| of two recommendation lists (1.0 when both are empty)."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def rank_correlation(scores_a: np.ndarray, scores_b: np.ndarray, items: Sequence[int]) -> float:
    """Spearman correlation of two runs' scores over ``items`` (the union of their top-k lists).

    1.0: both runs order those movies identically; it is NaN-free only with two or more items.
    """
    items = list(items)
    if len(items) < 2:
        return 1.0
    rho = spearmanr(np.asarray(scores_a)[items], np.asarray(scores_b)[items]).statistic
    return float(rho) if np.isfinite(rho) else 0.0
