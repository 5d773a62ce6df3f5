"""What the report needs of a Gram matrix G = A A^T of a 0/1 sparse A without forming G: its off-diagonal non-zeros and
sum of squares, in one compiled pass (numba).

scipy's sparse product builds every block of G as a new CSR matrix (indices, values, then a sort when two are added)
only for the block to be reduced to two numbers. This pass instead counts each pair of rows sharing a column into one
dense accumulator per thread (the size of one row of G, so it stays in the core's cache), visits the upper triangle
only (G is symmetric), and keeps nothing but the totals. The totals are integers, summed as int64: exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True)
class GramStats:
    """Off the diagonal of G = A A^T: non-zeros, the sum of squares, and the sum of squares of the Gram matrix of a
    part of A's columns alone (``part``; 0 without one)."""

    nnz: int
    sq: int
    part_sq: int


@contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """Hold numba's threads at ``n`` (at most the ones it started with) inside the block, then restore them."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def gram_stats(a: sp.spmatrix, part: np.ndarray | None = None, threads: int | None = None) -> GramStats:
    """``GramStats`` of A A^T for a 0/1 ``a`` (rows x columns); ``part`` a boolean mask over A's columns.

    Cost: sum over columns c of deg_c^2 / 2 increments (each pair of rows sharing a column, once), on ``threads``
    threads (default: as many as torch may use, so 1 per rank under torchrun).
    """
    a = sp.csr_matrix(a)
    a.sort_indices()
    at = a.T.tocsr()
    at.sort_indices()
    n_cols = a.shape[1]
    mask = np.zeros(n_cols if part is not None else 1, dtype=np.bool_)
    if part is not None:
        mask[:] = np.asarray(part, dtype=bool)
    threads = max(1, threads or torch.get_num_threads())
    with numba_threads(threads):
        nnz, sq, part_sq = _upper_pairs(
            a.indptr.astype(np.int64),
            a.indices.astype(np.int64),
            at.indptr.astype(np.int64),
            at.indices.astype(np.int64),
            mask,
            part is not None,
            threads,
        )
    return GramStats(nnz=2 * int(nnz), sq=2 * int(sq), part_sq=2 * int(part_sq))


@numba.njit(parallel=True, cache=True, nogil=True)
def _upper_pairs(a_ptr, a_idx, b_ptr, b_idx, part, use_part, threads):  # pragma: no cover - compiled
    """Over i < j: the number of non-zero G_ij, the sum of G_ij^2 and of G'_ij^2 (G' counts ``part``'s columns only).

    (a_ptr, a_idx) is A in CSR, (b_ptr, b_idx) is A^T in CSR, both with sorted indices. Thread t takes rows t, t + T,
    ...
    (popular rows are spread over the threads); for row i and each column c of it, the rows j > i of column c are the
    tail of c's sorted list, found by binary search.
    """
    n = len(a_ptr) - 1
    totals = np.zeros((threads, 3), dtype=np.int64)
    for t in numba.prange(threads):
        acc = np.zeros(n, dtype=np.int32)  # a row of G fits in int32 (a count of shared columns) and in cache
        acc_part = np.zeros(n if use_part else 1, dtype=np.int32)
        touched = np.empty(n, dtype=np.int32)
        nnz = 0
        sq = 0
        part_sq = 0
        for i in range(t, n, threads):
            m = 0
            for p in range(a_ptr[i], a_ptr[i + 1]):
                c = a_idx[p]
                lo, hi = b_ptr[c], b_ptr[c + 1]
                start = lo + np.searchsorted(b_idx[lo:hi], i, side="right")
                mine = use_part and part[c]
                for q in range(start, hi):
                    j = b_idx[q]
                    if acc[j] == 0:
                        touched[m] = j
                        m += 1
                    acc[j] += 1
                if mine:
                    for q in range(start, hi):
                        acc_part[b_idx[q]] += 1
            nnz += m
            for r in range(m):
                j = touched[r]
                g = np.int64(acc[j])
                sq += g * g
                acc[j] = 0
                if use_part:
                    g = np.int64(acc_part[j])
                    part_sq += g * g
                    acc_part[j] = 0
        totals[t, 0] = nnz
        totals[t, 1] = sq
        totals[t, 2] = part_sq
    return totals[:, 0].sum(), totals[:, 1].sum(), totals[:, 2].sum()


def gram_rows(a: sp.csr_matrix, at: sp.csr_matrix, rows: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Rows ``rows`` of G = A A^T with a zero diagonal, dense float32 (len(rows) x A's rows), for ``a`` in CSR and its
    transpose ``at`` in CSR: each row's products added straight into its output row, no sparse intermediate. (On a
    0/1 matrix the rows are counts, exact in float32 up to 2^24.)"""
    out = np.zeros((len(rows), a.shape[0]), dtype=np.float32)
    with numba_threads(threads or torch.get_num_threads()):
        _rows(_arrays(a), _arrays(at), np.asarray(rows, dtype=np.int64), out)
    return out


def _arrays(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays as they are (the kernel is compiled for their index type): copying 12 M indices to int64 for
    every block of rows cost 200 MB and a pass over them at ML-32M's shape."""
    return m.indptr, m.indices, m.data.astype(np.float32, copy=False)


@numba.njit(parallel=True, cache=True, nogil=True)
def _rows(a, b, rows, out):  # pragma: no cover - compiled
    a_ptr, a_idx, a_val = a
    b_ptr, b_idx, b_val = b
    for r in numba.prange(len(rows)):
        i = rows[r]
        row = out[r]
        for p in range(a_ptr[i], a_ptr[i + 1]):
            c = a_idx[p]
            w = a_val[p]
            for q in range(b_ptr[c], b_ptr[c + 1]):
                row[b_idx[q]] += w * b_val[q]
        row[i] = 0.0
