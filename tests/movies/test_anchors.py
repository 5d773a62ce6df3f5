"""EASE against its defining optimisation problem; ALS's cosine lists against implicit's own similar_items."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from embedlab.movies.anchors import ease_candidates, ease_weights, tune
from embedlab.movies.evaluate import build_queries


def random_likes(seed: int, users: int = 60, movies: int = 15) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((users, movies)) < 0.3).astype(np.float32))


@pytest.mark.parametrize("users", [60, 8])  # more users than movies, and fewer (the Woodbury side)
@pytest.mark.parametrize("lam", [0.5, 10.0, 300.0])
def test_ease_solves_its_constrained_least_squares(lam, users):
    """B minimises ||L - L B||^2 + lam ||B||^2 subject to diag(B) = 0: the gradient vanishes off the diagonal."""
    likes = random_likes(0, users=users)
    b = ease_weights(likes, lam).double().numpy()
    x = likes.toarray().astype(np.float64)
    grad = -2 * x.T @ (x - x @ b) + 2 * lam * b
    np.fill_diagonal(grad, 0)
    assert np.abs(np.diag(b)).max() == 0
    assert np.abs(grad).max() < 1e-4 * max(1.0, lam)


@pytest.mark.parametrize("users", [40, 12])
def test_ease_equals_the_closed_form_with_the_explicit_inverse(users):
    """B = I - P diag(1/diag P), P = (L^T L + lam I)^-1 formed by numpy's inverse, on either side of users = movies."""
    likes = random_likes(4, users=users, movies=25)
    x = likes.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(25))
    brute = np.eye(25) - p / np.diag(p)[None, :]
    assert np.allclose(ease_weights(likes, 3.0).double().numpy(), brute, atol=1e-5)


def test_ease_rejects_a_non_positive_lambda():
    with pytest.raises(ValueError, match="positive lambda"):
        ease_weights(random_likes(1), 0.0)


def test_tune_picks_the_best_validation_recall_and_refits_on_all_training_users():
    likes = random_likes(2, users=120)
    fit, val = likes[:90], build_queries(likes[90:])
    tuned = tune("EASE", ease_candidates([1.0, 1e4]), fit, val, 3, torch.ones(15, dtype=torch.bool), likes)
    assert set(tuned.validation) == {"lambda=1", "lambda=10000"} and tuned.setting == max(
        tuned.validation, key=tuned.validation.get
    )
    lam = float(tuned.setting.split("=")[1])
    q = torch.tensor([0, 4])
    assert torch.allclose(tuned.scorer(q), ease_weights(likes, lam)[q])  # refitted on every training user


def test_als_cosine_lists_equal_implicits_similar_items():
    pytest.importorskip("implicit")
    from implicit.cpu.als import AlternatingLeastSquares

    from embedlab.movies.anchors import als_item_factors
    from embedlab.movies.evaluate import cosine_scorer
    from embedlab.movies.recommend import top_k

    likes = random_likes(3, users=200, movies=40)
    factors = als_item_factors(likes, factors=8, regularization=0.1, iterations=5, seed=0)
    model = AlternatingLeastSquares(factors=8)
    model.item_factors = factors.numpy()
    q = torch.arange(40)
    ours, _ = top_k(cosine_scorer(factors)(q), q, 5)
    for i in range(40):
        ids, _ = model.similar_items(i, N=6)
        assert ours[i].tolist() == [int(j) for j in ids if j != i][:5]
