import numpy as np
import pytest
import scipy.sparse as sp
import torch

from embedlab.movies.objective import cost_and_grad, frobenius_sq, spectral_optimum, to_torch_csr


def cost_bruteforce(v: torch.Tensor, x_dense: torch.Tensor) -> torch.Tensor:
    """The defining double sum, with the dense M x M matrix: the reference the fast paths are checked against."""
    resid = v @ v.T - x_dense
    off_diag = ~torch.eye(v.shape[0], dtype=torch.bool)
    return (resid[off_diag] ** 2).sum()


def random_x(m: int, seed: int, density: float = 0.4) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    a = sp.random(m, m, density=density, random_state=rng, data_rvs=lambda n: rng.integers(1, 9, n)).toarray()
    x = np.triu(a, 1)
    return sp.csr_matrix(x + x.T)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_matches_bruteforce_double_sum(seed):
    x = random_x(12, seed)
    v = torch.randn(12, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    cost, _ = cost_and_grad(v, to_torch_csr(x, torch.float64), frobenius_sq(x))
    dense = torch.from_numpy(x.toarray())
    explicit = sum((float(v[i] @ v[j]) - dense[i, j].item()) ** 2 for i in range(12) for j in range(12) if i != j)
    assert cost == pytest.approx(explicit, rel=1e-10)
    assert cost == pytest.approx(float(cost_bruteforce(v, dense)), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 3])
def test_gradient_matches_autograd(seed):
    x = random_x(15, seed)
    v = torch.randn(15, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64, requires_grad=True)
    dense = torch.from_numpy(x.toarray())
    cost_bruteforce(v, dense).backward()
    _, grad = cost_and_grad(v.detach(), to_torch_csr(x, torch.float64), frobenius_sq(x))
    torch.testing.assert_close(grad, v.grad, rtol=1e-9, atol=1e-9)


def test_cost_at_zero_is_frobenius_norm():
    x = random_x(10, 5)
    cost, grad = cost_and_grad(torch.zeros(10, 2), to_torch_csr(x), frobenius_sq(x))
    assert cost == pytest.approx(float((x.toarray() ** 2).sum()))
    assert torch.count_nonzero(grad) == 0


def test_spectral_optimum_is_a_stationary_point_and_beats_random_starts():
    x = random_x(20, 7, density=0.6)
    sol = spectral_optimum(x, dim=3, max_rounds=500, rel_tol=1e-12)  # the alternation converges linearly
    v = torch.from_numpy(sol.v)
    xt = to_torch_csr(x, torch.float64)
    cost, grad = cost_and_grad(v, xt, frobenius_sq(x))
    assert cost == pytest.approx(sol.cost)
    assert all(a >= b - 1e-6 * abs(a) for a, b in zip(sol.history, sol.history[1:]))  # never rises
    # near-stationary: the gradient is tiny relative to its size at a small random point
    _, g0 = cost_and_grad(0.1 * torch.randn(20, 3, dtype=torch.float64), xt, frobenius_sq(x))
    assert grad.norm() < 1e-3 * g0.norm()
    # plain gradient descent from several starts never ends clearly below it
    for seed in range(3):
        w = torch.randn(20, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        for _ in range(3000):
            c, g = cost_and_grad(w, xt, frobenius_sq(x))
            w = w - 2e-4 * g
        assert c >= sol.cost * (1 - 1e-3)


def test_spectral_rejects_impossible_dimension():
    with pytest.raises(ValueError, match="dim must be"):
        spectral_optimum(random_x(5, 0), dim=5)


def _likes(seed: int, users: int = 30, movies: int = 18):
    """Random binary L including a user with one like and movies nobody liked."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, movies)) < 0.25).astype(np.float32)
    dense[0] = 0
    dense[0, 2] = 1
    dense[:, -3:] = 0
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_factored_materialised_and_bruteforce_agree(seed):
    from embedlab.movies.cooccurrence import colike_fro_sq, cooccurrence
    from embedlab.movies.objective import CoLikeOperator, MatrixOperator

    likes = _likes(seed)
    x = cooccurrence(likes)
    factored = CoLikeOperator.from_likes(likes, colike_fro_sq(likes), dtype=torch.float64)
    materialised = MatrixOperator.from_matrix(x, torch.float64)
    assert factored.fro_sq == pytest.approx(materialised.fro_sq, rel=1e-12)
    v = torch.randn(x.shape[0], 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(factored @ v, materialised @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(factored @ v[:, 0], materialised @ v[:, :1][:, 0], rtol=1e-12, atol=1e-12)
    c_f, g_f = cost_and_grad(v, factored)
    c_m, g_m = cost_and_grad(v, materialised)
    brute = float(cost_bruteforce(v, torch.from_numpy(x.toarray()).double()))
    assert c_f == pytest.approx(brute, rel=1e-10) and c_m == pytest.approx(brute, rel=1e-10)
    torch.testing.assert_close(g_f, g_m, rtol=1e-10, atol=1e-10)


def test_spectral_optimum_is_the_same_on_both_operators():
    from embedlab.movies.cooccurrence import colike_fro_sq, cooccurrence
    from embedlab.movies.objective import CoLikeOperator

    likes = _likes(5, users=60, movies=25)
    a = spectral_optimum(CoLikeOperator.from_likes(likes, colike_fro_sq(likes)), dim=3, max_rounds=200, rel_tol=1e-10)
    b = spectral_optimum(cooccurrence(likes), dim=3, max_rounds=200, rel_tol=1e-10)
    assert a.cost == pytest.approx(b.cost, rel=1e-8)
    np.testing.assert_allclose(a.v @ a.v.T, b.v @ b.v.T, atol=1e-6 * np.abs(b.v).max() ** 2)
    assert a.converged and b.converged


def test_sharded_operator_sums_to_the_whole():
    """Two halves of the users, summed (what all_reduce does across ranks), equal the single operator."""
    from embedlab.movies.cooccurrence import colike_fro_sq
    from embedlab.movies.objective import CoLikeOperator

    likes = _likes(7)
    counts = np.asarray(likes.sum(axis=0)).ravel()
    whole = CoLikeOperator.from_likes(likes, colike_fro_sq(likes), dtype=torch.float64)
    top = CoLikeOperator.from_likes(likes[:13], whole.fro_sq, counts=counts, dtype=torch.float64)
    bottom = CoLikeOperator.from_likes(likes[13:], whole.fro_sq, counts=counts, dtype=torch.float64)
    v = torch.randn(likes.shape[1], 3, dtype=torch.float64)
    partial = top.lt @ (top.l @ v) + bottom.lt @ (bottom.l @ v)
    torch.testing.assert_close(partial - whole.counts[:, None] * v, whole @ v)


@pytest.mark.parametrize("seed", [0, 4])
def test_binary_rows_equal_the_sparse_product_with_empty_rows_and_columns(seed):
    from embedlab.movies.objective import BinaryRows

    likes = _likes(seed)  # movies nobody liked: empty rows of L^T
    for mat in (likes, likes.T.tocsr()):
        rows = BinaryRows.from_scipy(mat)
        assert rows.shape == mat.shape
        for dtype, width in ((torch.float64, 5), (torch.float32, 1), (torch.float32, 40)):  # CSR, CSR, embedding_bag
            v = torch.randn(mat.shape[1], width, dtype=dtype)
            np.testing.assert_allclose(
                (rows @ v).numpy(), mat.astype(np.float64) @ v.numpy().astype(np.float64), rtol=1e-5, atol=1e-5
            )
    with pytest.raises(ValueError, match="0/1 matrix"):
        BinaryRows.from_scipy(2 * likes)


def test_gram_equals_torch_product_in_both_precisions():
    from embedlab.movies.objective import gram

    for dtype in (torch.float32, torch.float64):
        v = torch.randn(300, 7, dtype=dtype)
        torch.testing.assert_close(gram(v), v.T @ v)
        torch.testing.assert_close(gram(v[::2]), v[::2].T @ v[::2])  # a strided view
