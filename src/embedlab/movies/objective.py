"""The co-like factorisation cost, its closed-form gradient and the spectral reference optimum.

c(V) = sum_{i != j} (v_i . v_j - X_ij)^2 with X symmetric and zero on the diagonal. Expanding the
square and subtracting the i == j terms gives

    c = ||V^T V||_F^2 - sum_i ||v_i||^4 - 2 tr(V^T X V) + ||X||_F^2
    grad = 4 (V (V^T V) - diag(||v_i||^2) V - X V)

so one evaluation costs one sparse product X V (O(nnz d)) plus O(M d^2) dense work, and the dense
M x M matrix V V^T is never formed. Pure tensor code: no I/O, no plotting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator, eigsh


def to_torch_csr(x: sp.spmatrix, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert a scipy sparse matrix to a torch CSR tensor (torch's CSR matmul is ~2x scipy's here)."""
    x = sp.csr_matrix(x)
    x.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(x.indptr.astype(np.int64)),
            torch.from_numpy(x.indices.astype(np.int64)),
            torch.from_numpy(x.data).to(dtype),
            size=x.shape,
            check_invariants=False,  # scipy's CSR is valid by construction; checking costs a pass
        )


def frobenius_sq(x: sp.spmatrix) -> float:
    """||X||_F^2 in float64 (the cost at V = 0)."""
    data = sp.csr_matrix(x).data.astype(np.float64)
    return float(np.dot(data, data))


def cost_and_grad(v: torch.Tensor, x: torch.Tensor, x_fro_sq: float) -> tuple[float, torch.Tensor]:
    """Return c(V) and dc/dV for a sparse (or dense) symmetric X with zero diagonal.

    Pass ``x_fro_sq = ||X||_F^2`` (constant, computed once). The cost is accumulated in float64
    so that it stays accurate near the optimum, where it is a small difference of large terms.
    """
    xv = x @ v
    gram = v.T @ v
    sq_norms = (v * v).sum(dim=1)
    cost = (
        (gram.double() ** 2).sum()
        - (sq_norms.double() ** 2).sum()
        - 2.0 * (v.double() * xv.double()).sum()
        + x_fro_sq
    )
    grad = 4.0 * (v @ gram - sq_norms[:, None] * v - xv)
    return float(cost), grad


def cost_bruteforce(v: torch.Tensor, x_dense: torch.Tensor) -> torch.Tensor:
    """The defining double sum, with the dense M x M matrix: a reference for tests only."""
    resid = v @ v.T - x_dense
    off_diag = ~torch.eye(v.shape[0], dtype=torch.bool)
    return (resid[off_diag] ** 2).sum()


def _shifted_matvec(xs: sp.csr_matrix, diag: np.ndarray):
    """y -> (X + diag(d)) y, for eigsh without ever materialising X + D."""

    def apply(y: np.ndarray) -> np.ndarray:
        y2 = y.reshape(xs.shape[0], -1)
        return xs @ y2 + diag[:, None] * y2

    return apply


@dataclass(frozen=True)
class SpectralSolution:
    """The reference optimum: V = U_d sqrt(Lambda_d) of X with the diagonal refilled from the fit."""

    v: np.ndarray
    cost: float
    history: list[float]
    eigenvalues: np.ndarray


def spectral_optimum(
    x: sp.spmatrix,
    dim: int,
    max_rounds: int = 50,
    rel_tol: float = 1e-6,
    seed: int = 0,
) -> SpectralSolution:
    """Best rank-``dim`` PSD fit V V^T to X off the diagonal, by alternating two exact steps.

    With the diagonal D free, min_V ||V V^T - (X + D)||_F^2 is solved by the top-d eigenpairs of
    X + D (Eckart-Young, keeping positive eigenvalues), and the best D for fixed V is
    diag(V V^T). Neither step can raise the off-diagonal cost, so the rounds stop when it stops
    falling by more than ``rel_tol``. Each round is one scipy ``eigsh`` call on a LinearOperator.
    """
    xs = sp.csr_matrix(x, dtype=np.float64)
    m = xs.shape[0]
    if not 1 <= dim < m:
        raise ValueError(f"dim must be in [1, {m - 1}] for a {m} x {m} matrix, got {dim}")
    x_fro_sq = frobenius_sq(xs)
    xt = to_torch_csr(xs, torch.float64)
    diag = np.zeros(m)
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(m)
    history: list[float] = []
    best: SpectralSolution | None = None
    for _ in range(max_rounds):
        op = LinearOperator((m, m), matvec=_shifted_matvec(xs, diag.copy()), dtype=np.float64)
        vals, vecs = eigsh(op, k=dim, which="LA", v0=v0)
        vals = np.clip(vals, 0.0, None)
        v = vecs * np.sqrt(vals)[None, :]
        cost, _ = cost_and_grad(torch.from_numpy(v), xt, x_fro_sq)
        history.append(cost)
        if best is None or cost < best.cost:
            best = SpectralSolution(v=v, cost=cost, history=list(history), eigenvalues=vals[::-1].copy())
        diag = (v * v).sum(axis=1)
        v0 = vecs[:, -1]
        if len(history) > 1 and history[-2] - history[-1] <= rel_tol * abs(history[-2]):
            break
    assert best is not None
    return SpectralSolution(v=best.v, cost=best.cost, history=history, eigenvalues=best.eigenvalues)
