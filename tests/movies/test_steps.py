"""The movie steps run in memory (no run folder) on a tiny MovieLens folder, checked against brute-force oracles:
X formed densely from L, and top-k lists by sorting every similarity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlab.config import MoviesConfig
from embedlab.movies.prepare import step_2a_data
from embedlab.movies.steps import Fitted, step_2c_recommend
from embedlab.movies.train import RunResult


@pytest.fixture
def data(movielens_root):
    cfg = MoviesConfig(
        data_dir=str(movielens_root), offline=True, allow_modified_data=True, dim=4, dim_sweep=[], min_likes=2
    )
    return cfg, step_2a_data(cfg)


def test_2a_summarises_x_as_the_dense_product_does(data):
    cfg, prepared = data
    likes = prepared.co.likes.toarray().astype(np.int64)
    x = likes.T @ likes
    np.fill_diagonal(x, 0)
    (stats,) = prepared.out.results
    assert (stats.x_nnz, stats.x_max, stats.x_fro_sq) == (int((x > 0).sum()), int(x.max()), float((x**2).sum()))
    pairs = prepared.out.tables["colike_top_pairs"].df
    best = np.sort(x[np.triu_indices_from(x, 1)])[::-1][: len(pairs)]
    assert pairs["users who liked both"].tolist() == best.tolist()
    assert list(prepared.out.artefacts["items.csv"]["likes"]) == likes.sum(axis=0).tolist()


def test_2c_lists_are_the_top_k_of_every_similarity_sorted(data):
    cfg, prepared = data
    v = torch.randn(prepared.co.n_movies, cfg.dim, generator=torch.Generator().manual_seed(0))
    run = RunResult("adam", 0.1, [1.0], v, "finished", 1, 0.0)
    fitted = Fitted([run], run, run, None, None, None, None)  # 2C reads the recommending embedding alone
    recommended = step_2c_recommend(cfg, prepared, fitted)
    vn = torch.nn.functional.normalize(v, dim=1)
    for q in prepared.queries:
        cos = (vn @ vn[q.row]).numpy()
        allowed = [i for i in range(len(cos)) if i != q.row and prepared.co.like_counts[i] >= cfg.min_likes]
        expected = sorted(allowed, key=lambda i: -cos[i])[: cfg.top_k]
        assert recommended.top_lists[q.text] == expected
        table = recommended.out.tables[f"recs_{q.text.lower().replace(' ', '_')}"].df
        assert table["similarity"].tolist() == pytest.approx([round(float(cos[i]), 4) for i in expected], abs=1e-4)
