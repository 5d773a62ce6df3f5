"""The field's own item-to-item recommenders, as anchors for the held-out evaluation.

- EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): B = I - P diag(1/diag P) with
  P = (L^T L + lambda I)^-1, a closed form over the training users' likes; the score of movie j
  for a query movie i is B_ij. Dense M x M, so it is skipped above ``ease_max_items`` movies; with fewer users than
  movies P comes from the users' side (Woodbury's identity), a users x users solve.
- ALS item factors from the ``implicit`` library (Hu, Koren & Volinsky 2008), compared by cosine
  exactly as ``implicit``'s ``similar_items`` does.

Each is tuned on a validation slice of the training users (never the test users), then refitted on
all training users; the held-out code scores them with the same protocol as everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from embedlab.errors import InputError
from embedlab.movies.evaluate import Queries, Scorer, cosine_scorer, recall_at_k, recommend_all


def ease_weights(likes: sp.spmatrix, lam: float) -> torch.Tensor:
    """EASE's item-item matrix B (M x M, zero diagonal) for the like matrix ``likes`` (users x M)."""
    if lam <= 0:
        raise InputError(f"EASE needs a positive lambda (got {lam})")
    lc = sp.csr_matrix(likes, dtype=np.float64)
    users, movies = lc.shape
    if users >= movies:
        return ease_weights_by_inverse(lc, lam)
    # Woodbury: lam (L^T L + lam I)^-1 = I - L^T (L L^T + lam I)^-1 L, a users x users solve instead of an M x M
    # inverse; B's column scaling cancels the factor lam
    k = torch.from_numpy((lc @ lc.T).toarray())
    k.diagonal().add_(lam)
    z = torch.cholesky_solve(torch.from_numpy(lc.toarray()), torch.linalg.cholesky(k))
    p = torch.from_numpy(np.asarray(lc.T @ z.numpy())).neg_()
    p.diagonal().add_(1.0)
    return _ease_from(p)


def ease_weights_by_inverse(likes: sp.spmatrix, lam: float) -> torch.Tensor:
    """``ease_weights`` from the M x M inverse P of L^T L + lambda I, whatever the shape (bench/movies_ease.py's
    baseline)."""
    lc = sp.csr_matrix(likes, dtype=np.float64)
    gram = torch.from_numpy((lc.T @ lc).toarray())
    gram.diagonal().add_(lam)
    return _ease_from(torch.cholesky_inverse(torch.linalg.cholesky(gram)))


def _ease_from(p: torch.Tensor) -> torch.Tensor:
    """B = I - P diag(1/diag P), i.e. -P's columns scaled by their diagonal, with a zero diagonal."""
    b = -p / p.diagonal()[None, :]
    b.diagonal().zero_()
    return b.float()


def ease_scorer(b: torch.Tensor) -> Scorer:
    """Scores of every movie for each query movie: its row of B."""
    return lambda q: b[q]


def als_item_factors(
    likes: sp.spmatrix, factors: int, regularization: float, iterations: int, seed: int, alpha: float = 1.0
) -> torch.Tensor:
    """``implicit``'s ALS item factors (M x factors), fitted on the binary likes on the CPU."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own threads; a threaded BLAS underneath only oversubscribes
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=torch.get_num_threads(),
            calculate_training_loss=False,
        )
        model.fit(sp.csr_matrix(likes, dtype=np.float32), show_progress=False)
    return torch.from_numpy(np.ascontiguousarray(model.item_factors, dtype=np.float32))


def implicit_available() -> bool:
    try:
        import implicit  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Tuned:
    """An anchor's chosen setting, what each candidate scored on the validation users, and its scorer."""

    name: str
    setting: str
    validation: dict[str, float]  # setting -> validation Recall@k
    scorer: Scorer


def tune(
    name: str,
    candidates: dict[str, Callable[[sp.csr_matrix], Scorer]],
    fit_likes: sp.csr_matrix,
    val_queries: Queries,
    k: int,
    eligible: torch.Tensor,
    train_likes: sp.csr_matrix,
) -> Tuned:
    """Fit every candidate on ``fit_likes``, keep the best validation Recall@k (first on ties), refit it on
    ``train_likes``."""
    scores = {
        setting: recall_at_k(recommend_all(make(fit_likes), val_queries, k, eligible), val_queries)
        for setting, make in candidates.items()
    }
    best = max(scores, key=lambda s: scores[s])
    return Tuned(name=name, setting=best, validation=scores, scorer=candidates[best](train_likes))


def ease_candidates(lambdas: list[float]) -> dict[str, Callable[[sp.csr_matrix], Scorer]]:
    return {f"lambda={lam:g}": lambda likes, lam=lam: ease_scorer(ease_weights(likes, lam)) for lam in lambdas}


def als_candidates(
    factors: list[int], regularization: list[float], alpha: list[float], iterations: int, seed: int
) -> dict[str, Callable[[sp.csr_matrix], Scorer]]:
    return {
        f"{f} factors, reg={r:g}, alpha={a:g}": lambda likes, f=f, r=r, a=a: cosine_scorer(
            als_item_factors(likes, f, r, iterations, seed, a)
        )
        for f in factors
        for r in regularization
        for a in alpha
    }
