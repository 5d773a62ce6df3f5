"""The compiled pass over pairs of likes against the Gram matrix formed densely."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedlab.movies.gram import gram_stats


def dense_stats(a: np.ndarray, part: np.ndarray | None) -> tuple[int, int, int]:
    g = a @ a.T
    off = ~np.eye(len(g), dtype=bool)
    gp = a[:, part] @ a[:, part].T if part is not None else np.zeros_like(g)
    return int(np.count_nonzero(g[off])), int((g[off] ** 2).sum()), int((gp[off] ** 2).sum())


@st.composite
def zero_one_matrices(draw):
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    a = draw(arrays(np.int64, (rows, cols), elements=st.integers(0, 1)))
    part = draw(st.none() | arrays(np.bool_, cols))
    return a, part


@settings(max_examples=200, deadline=None)
@given(zero_one_matrices(), st.integers(1, 3))
def test_gram_stats_equal_the_dense_gram_matrix(case, threads):
    a, part = case
    s = gram_stats(sp.csr_matrix(a.astype(np.float32)), part, threads=threads)
    assert (s.nnz, s.sq, s.part_sq) == dense_stats(a, part)


def test_unsorted_indices_and_large_counts():
    """Rows given with their columns out of order, and counts past the range of int16 squared (exact int64 totals)."""
    a = np.zeros((3, 70_000), dtype=np.float32)
    a[0, :] = a[1, :] = 1
    a[2, ::7] = 1
    m = sp.csr_matrix(a)
    perm = np.random.default_rng(0).permutation(m.indptr[1])  # shuffle the first row's columns
    m.indices[: m.indptr[1]] = m.indices[perm]
    m.has_sorted_indices = False
    s = gram_stats(m, None)
    assert (s.nnz, s.sq) == dense_stats(a.astype(np.int64), None)[:2] == (6, 2 * (70_000**2 + 2 * 10_000**2))


@pytest.mark.parametrize("threads", [1, 2])
def test_same_totals_on_any_number_of_threads(threads):
    rng = np.random.default_rng(1)
    m = sp.random(300, 200, density=0.1, random_state=rng, format="csr")
    m.data[:] = 1
    part = rng.random(200) < 0.7
    assert gram_stats(m, part, threads=threads) == gram_stats(m, part, threads=3)


@settings(max_examples=100, deadline=None)
@given(zero_one_matrices(), st.data())
def test_gram_rows_equal_the_dense_gram_matrix(case, data):
    from embedlab.movies.gram import gram_rows

    a, _ = case
    rows = np.array(data.draw(st.lists(st.integers(0, len(a) - 1), max_size=6)), dtype=np.int64)
    g = (a @ a.T).astype(np.float32)
    np.fill_diagonal(g, 0)
    m = sp.csr_matrix(a.astype(np.float32))
    got = gram_rows(m, m.T.tocsr(), rows)
    assert got.dtype == np.float32 and got.shape == (len(rows), len(a))
    np.testing.assert_array_equal(got, g[rows])
