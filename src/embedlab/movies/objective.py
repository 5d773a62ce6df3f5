"""The co-like factorisation cost, its closed-form gradient and the spectral reference optimum.

c(V) = sum_{i != j} (v_i . v_j - X_ij)^2 with X symmetric and zero on the diagonal. Expanding the
square and subtracting the i == j terms gives

    c = ||V^T V||_F^2 - sum_i ||v_i||^4 - 2 tr(V^T X V) + ||X||_F^2
    grad = 4 (V (V^T V) - diag(||v_i||^2) V - X V)

X itself is never formed: with L the binary user x movie like matrix and n its column sums,
X = L^T L - diag(n), so X V = L^T (L V) - n * V and ||X||_F^2 = ||L^T L||_F^2 - sum_i n_i^2.
One evaluation costs O(nnz(L) d + M d^2) instead of O(nnz(X) d), which grows with the square of
the catalogue. Under torch.distributed each rank holds some users' rows of L and one all_reduce
sums their L_r^T (L_r V). Pure tensor code: no I/O, no plotting.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, eigsh
from threadpoolctl import threadpool_limits

from embedlab.errors import InputError


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
    """||X||_F^2 of a materialised matrix, in float64 (the reference path; see ``colike_fro_sq``)."""
    data = sp.csr_matrix(x).data.astype(np.float64)
    return float(np.dot(data, data))


class XOperator(Protocol):
    """What the fit and the spectral reference need of X: ``X @ V``, its size and ||X||_F^2."""

    shape: tuple[int, int]
    fro_sq: float

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor: ...

    def to(self, dtype: torch.dtype) -> XOperator: ...


Reduce = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BinaryRows:
    """A 0/1 sparse matrix (L or L^T) applied as sums of the selected rows of V.

    Every non-zero of L is 1, so a wide float32 product needs no multiplications: ``embedding_bag``
    (mode "sum") takes 0.6 ms for L^T (L V) at d = 100 where torch's CSR matmul takes 1.5 (measured on
    ml-latest-small, ``bench/movies_cost_grad.py``). For narrow or float64 V (eigsh's matvecs)
    ``embedding_bag`` has no fast kernel (3.6 ms against 0.11 ms for one vector), so those go through
    a CSR tensor that shares the same index arrays.
    """

    indices: torch.Tensor  # int64 column of each non-zero, row by row (CSR order)
    offsets: torch.Tensor  # int64, n_rows + 1: row r's non-zeros are indices[offsets[r]:offsets[r + 1]]
    n_cols: int
    _csr: dict[torch.dtype, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    #: from this many float32 columns on, ``embedding_bag`` beats CSR (measured: equal at 16, 2.5x at 100)
    BAG_MIN_COLUMNS = 16

    @classmethod
    def from_scipy(cls, x: sp.spmatrix) -> BinaryRows:
        x = sp.csr_matrix(x)
        x.sort_indices()
        if x.nnz and not np.all(x.data == 1):
            raise ValueError("BinaryRows needs a 0/1 matrix (a like matrix); found other values")
        return cls(
            indices=torch.from_numpy(x.indices.astype(np.int64)),
            offsets=torch.from_numpy(x.indptr.astype(np.int64)),
            n_cols=int(x.shape[1]),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.offsets.shape[0]) - 1, self.n_cols)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if v.dtype == torch.float32 and v.shape[1] >= self.BAG_MIN_COLUMNS:
            return F.embedding_bag(self.indices, v, self.offsets, mode="sum", include_last_offset=True)
        return self.csr(v.dtype) @ v

    def csr(self, dtype: torch.dtype) -> torch.Tensor:
        """The same matrix as a torch CSR tensor of ``dtype`` (built once per dtype)."""
        if dtype not in self._csr:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._csr[dtype] = torch.sparse_csr_tensor(
                    self.offsets,
                    self.indices,
                    torch.ones(len(self.indices), dtype=dtype),
                    size=self.shape,
                    check_invariants=False,
                )
        return self._csr[dtype]


def gram(v: torch.Tensor) -> torch.Tensor:
    """V^T V. On the CPU through numpy, whose BLAS (OpenBLAS) sees A^T A and computes one triangle
    (syrk): measured 1.0 ms against torch's 1.7 ms for 6,298 x 100 in float32, one thread."""
    if v.device.type != "cpu" or v.requires_grad:
        return v.T @ v
    a = v.numpy()
    return torch.from_numpy(a.T @ a)


@dataclass(frozen=True)
class CoLikeOperator:
    """X = L^T L - diag(n) applied as L^T (L V) - n * V; X is never formed.

    ``l`` holds this process's users (all of them in a single process); ``counts`` and ``fro_sq``
    always describe all users. ``all_reduce`` (a torch.distributed SUM) adds the ranks' partial
    products L_r^T (L_r V); it is None in a single process.
    """

    l: BinaryRows  # noqa: E741 - L, the likes (users of this rank, M)
    lt: BinaryRows  # (M, users of this rank): the transpose, so both products gather rows
    counts: torch.Tensor  # (M,) like counts over all users
    fro_sq: float
    all_reduce: Reduce | None = None

    @property
    def shape(self) -> tuple[int, int]:
        m = int(self.counts.shape[0])
        return (m, m)

    @classmethod
    def from_likes(
        cls,
        likes: sp.spmatrix,
        fro_sq: float,
        counts: np.ndarray | None = None,
        dtype: torch.dtype = torch.float32,
        all_reduce: Reduce | None = None,
    ) -> CoLikeOperator:
        """Build from (this rank's rows of) L, a 0/1 matrix; ``counts`` default to L's own column sums."""
        lc = sp.csr_matrix(likes, dtype=np.float32)
        n = np.asarray(lc.sum(axis=0)).ravel() if counts is None else np.asarray(counts)
        return cls(
            l=BinaryRows.from_scipy(lc),
            lt=BinaryRows.from_scipy(lc.T.tocsr()),
            counts=torch.from_numpy(n.astype(np.float64)).to(dtype),
            fro_sq=float(fro_sq),
            all_reduce=all_reduce,
        )

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        vv = v if v.dim() == 2 else v[:, None]
        y = self.lt @ (self.l @ vv)
        if self.all_reduce is not None:
            y = self.all_reduce(y)
        y = y - self.counts[:, None] * vv
        return y if v.dim() == 2 else y[:, 0]

    def gram_product(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L^T L V, ||L V||_F^2 in float64), summed over the ranks: the two things the cost needs of L.

        tr(V^T X V) = ||L V||_F^2 - sum_i n_i ||v_i||^2 comes almost free from the small U x d product
        L V, and more accurately than summing V * (X V) over all M x d entries.
        """
        lv = self.l @ v
        y = self.lt @ lv
        sq = (lv.double() ** 2).sum().reshape(1)
        if self.all_reduce is not None:
            y = self.all_reduce(y)
            sq = self.all_reduce(sq)
        return y, sq[0]

    def to(self, dtype: torch.dtype) -> CoLikeOperator:
        """The same operator in another precision (float64 for the spectral reference): V sets the product's."""
        return replace(self, counts=self.counts.to(dtype))


@dataclass(frozen=True)
class MatrixOperator:
    """A materialised sparse X behind the same interface: the reference path for tests and benchmarks."""

    x: torch.Tensor
    fro_sq: float

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)  # type: ignore[return-value]

    @classmethod
    def from_matrix(cls, x: sp.spmatrix, dtype: torch.dtype = torch.float32) -> MatrixOperator:
        return cls(x=to_torch_csr(x, dtype), fro_sq=frobenius_sq(x))

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.x @ v

    def to(self, dtype: torch.dtype) -> MatrixOperator:
        return MatrixOperator(x=self.x.to(dtype), fro_sq=self.fro_sq)


def as_operator(x: XOperator | sp.spmatrix) -> XOperator:
    """Accept a scipy matrix where an operator is expected (tests, small examples)."""
    return MatrixOperator.from_matrix(x) if sp.issparse(x) else x


def cost_and_grad(
    v: torch.Tensor, x: XOperator | torch.Tensor, x_fro_sq: float | None = None
) -> tuple[float, torch.Tensor]:
    """Return c(V) and dc/dV for X symmetric with zero diagonal (an operator, or a sparse/dense tensor).

    ``x_fro_sq`` = ||X||_F^2 defaults to the operator's own. The four terms of the cost are summed
    in float64 (V and X V may be float32): near the optimum the cost is a small difference of
    large terms, and float32 sums would lose it.
    """
    fro = x.fro_sq if x_fro_sq is None else x_fro_sq  # type: ignore[union-attr]
    g = gram(v)
    sq_norms = torch.linalg.vector_norm(v, dim=1, keepdim=True).square_()
    if isinstance(x, CoLikeOperator):  # fused: grad/4 = V gram - L^T L V + (n - |v|^2) * V, one pass fewer
        ltlv, lv_sq = x.gram_product(v)
        trace = lv_sq - (x.counts.double() * sq_norms.reshape(-1).double()).sum()
        # in place on the fresh L^T L V: a new M x d output would cost a copy and page faults each step
        grad = ltlv.addmm_(v, g, beta=-4.0, alpha=4.0).addcmul_(x.counts[:, None] - sq_norms, v, value=4.0)
    else:
        xv = x @ v
        trace = (v * xv).sum(dtype=torch.float64)
        grad = torch.addmm(xv, v, g, beta=-1.0).sub_(sq_norms * v).mul_(4.0)  # 4 (V V^T V - diag(|v|^2) V - X V)
    cost = (g.double() ** 2).sum() - (sq_norms.double() ** 2).sum() - 2.0 * trace
    return float(cost) + fro, grad


def _shifted_matvec(op: XOperator, diag: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """y -> (X + diag(d)) y through the operator (float64), for eigsh; X + D is never formed."""

    def apply(y: np.ndarray) -> np.ndarray:
        y2 = np.ascontiguousarray(y.reshape(op.shape[0], -1), dtype=np.float64)
        return (op @ torch.from_numpy(y2)).numpy() + diag[:, None] * y2

    return apply


@dataclass(frozen=True)
class SpectralSolution:
    """The reference optimum: V = U_d sqrt(Lambda_d) of X with the diagonal refilled from the fit."""

    v: np.ndarray
    cost: float
    history: list[float]
    eigenvalues: np.ndarray
    converged: bool = True  # False: stopped at max_rounds while the cost was still falling


def spectral_optimum(
    x: XOperator | sp.spmatrix,
    dim: int,
    max_rounds: int = 50,
    rel_tol: float = 1e-6,
    seed: int = 0,
) -> SpectralSolution:
    """Best rank-``dim`` PSD fit V V^T to X off the diagonal, by alternating two exact steps.

    With the diagonal D free, min_V ||V V^T - (X + D)||_F^2 is solved by the top-d eigenpairs of
    X + D (Eckart-Young, keeping positive eigenvalues), and the best D for fixed V is
    diag(V V^T). Neither step can raise the off-diagonal cost, so the rounds stop when it stops
    falling by more than ``rel_tol``. Each round is one scipy ``eigsh`` call on a LinearOperator
    whose matvec is the operator's (factored, and sharded under torch.distributed: every rank
    calls eigsh in lockstep with the same start vector and gets the same all-reduced products).
    """
    op = as_operator(x).to(torch.float64)
    m = op.shape[0]
    if not 1 <= dim < m:
        raise InputError(f"dim must be in [1, {m - 1}] for a {m} x {m} matrix, got {dim}")
    diag = np.zeros(m)
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(m)
    history: list[float] = []
    best: SpectralSolution | None = None
    converged = False
    for _ in range(max_rounds):
        lin = LinearOperator(
            (m, m), matvec=_shifted_matvec(op, diag.copy()), matmat=_shifted_matvec(op, diag.copy()), dtype=np.float64
        )
        # ARPACK's small dense steps: 2 BLAS threads contend with torch's and run 7x slower
        with threadpool_limits(1, "blas"):
            vals, vecs = eigsh(lin, k=dim, which="LA", v0=v0)
        vals = np.clip(vals, 0.0, None)
        v = vecs * np.sqrt(vals)[None, :]
        cost, _ = cost_and_grad(torch.from_numpy(v), op)
        history.append(cost)
        if best is None or cost < best.cost:
            best = SpectralSolution(v=v, cost=cost, history=list(history), eigenvalues=vals[::-1].copy())
        diag = (v * v).sum(axis=1)
        v0 = vecs[:, -1]
        if len(history) > 1 and history[-2] - history[-1] <= rel_tol * abs(history[-2]):
            converged = True
            break
    assert best is not None
    return SpectralSolution(
        v=best.v, cost=best.cost, history=history, eigenvalues=best.eigenvalues, converged=converged
    )
