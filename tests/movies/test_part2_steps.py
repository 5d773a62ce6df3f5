"""The movie steps run in memory (no run folder) on a tiny MovieLens folder, checked against brute-force oracles:
X formed densely from L, and top-k lists by sorting every similarity."""

from __future__ import annotations

import dataclasses
import io

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


def dense_cost(x: np.ndarray, v: np.ndarray) -> float:
    """sum over i != j of (v_i . v_j - X_ij)^2, every pair written out."""
    v = v.astype(np.float64)
    return float(sum((v[i] @ v[j] - x[i, j]) ** 2 for i in range(len(x)) for j in range(len(x)) if i != j))


@pytest.fixture
def fitted(data):
    from embedlab.movies.steps import step_2b_fit

    cfg, prepared = data
    cfg = dataclasses.replace(cfg, grid={"sgd": [1e-4, 1.0], "adam": [0.1]}, iterations=60, final_iterations=200)
    likes = prepared.co.likes.toarray().astype(np.int64)
    x = likes.T @ likes
    np.fill_diagonal(x, 0)
    return cfg, prepared, step_2b_fit(cfg, prepared), x


def test_2b_costs_are_the_objective_summed_pair_by_pair(fitted):
    cfg, _, fit, x = fitted
    (summary,) = fit.out.results
    assert summary.cost_at_zero == pytest.approx(float((x**2).sum()))
    assert summary.spectral_cost == pytest.approx(dense_cost(x, fit.spectral.v), rel=1e-6)
    assert fit.final.final_loss == pytest.approx(dense_cost(x, fit.final.v.numpy()), rel=1e-4)
    table = fit.out.tables["sweep"].df
    assert list(zip(table["optimizer"], table["lr"])) == [(o, lr) for o, lrs in cfg.grid.items() for lr in lrs]
    ok = table[table["status"] != "diverged"]
    assert (ok["final_cost"] >= summary.spectral_cost * (1 - 1e-6)).all()  # nothing beats the optimum
    best = ok.loc[ok["final_cost"].idxmin()]
    assert (summary.best_optimizer, summary.best_lr) == (best["optimizer"], best["lr"])
    assert summary.final_gap_to_optimum == pytest.approx(
        (fit.final.final_loss - summary.spectral_cost) / summary.spectral_cost
    )
    assert summary.runs_diverged == 1 and table.loc[table["lr"] == 1.0, "status"].item() == "diverged"
    saved = np.load(io.BytesIO(fit.out.artefacts["embeddings.npz"]))
    assert np.array_equal(saved["v"], fit.final.v.numpy())


def test_stability_is_the_jaccard_of_each_runs_top_k_with_the_recommending_ones(fitted):
    from embedlab.movies.steps import step_stability

    cfg, prepared, fit, _ = fitted
    recommended = step_2c_recommend(cfg, prepared, fit)
    out = step_stability(cfg, prepared, fit, recommended.top_lists)
    table = out.tables["stability"].df
    runs = [r for r in fit.results if not r.diverged] + [None]  # None: the spectral optimum, last
    assert len(table) == len(runs)
    for (_, row), run in zip(table.iterrows(), runs):
        v = torch.from_numpy(fit.spectral.v.astype(np.float32)) if run is None else run.v
        vn = torch.nn.functional.normalize(v, dim=1)
        jaccards = []
        for q in prepared.queries:
            cos = (vn @ vn[q.row]).numpy()
            allowed = [i for i in range(len(cos)) if i != q.row and prepared.co.like_counts[i] >= cfg.min_likes]
            mine = set(sorted(allowed, key=lambda i: -cos[i])[: cfg.top_k])
            ref = set(recommended.top_lists[q.text])
            jaccards.append(len(mine & ref) / len(mine | ref))
        assert row[f"mean_jaccard@{cfg.top_k}"] == pytest.approx(np.mean(jaccards))
    (result,) = out.results
    assert result.diverged_runs == 1 and result.spectral_jaccard == pytest.approx(
        table.iloc[-1][f"mean_jaccard@{cfg.top_k}"]
    )


def test_the_held_out_split_is_the_ratings_split_by_user(data):
    """HoldoutSplit against the ratings themselves: training users' likes, the movies they liked as columns, and the
    test users' liked movies as queries; no user on both sides."""
    from embedlab.movies.evaluate import split_users
    from embedlab.movies.holdout import HoldoutSplit

    cfg, prepared = data
    split = HoldoutSplit.make(cfg, prepared.ratings, prepared.movies, prepared.co)
    ratings = prepared.ratings
    train_users, test_users = split_users(ratings["userId"].to_numpy(), cfg.holdout_fraction, cfg.holdout_seed)
    assert not set(train_users) & set(test_users)
    liked = ratings[ratings["rating"] >= cfg.like_threshold]
    train_liked = liked[liked["userId"].isin(train_users)]
    assert list(split.train.movie_ids) == sorted(train_liked["movieId"].unique())
    column = {int(m): j for j, m in enumerate(split.train.movie_ids)}
    for row, user in enumerate(split.train.user_ids):
        mine = {column[int(m)] for m in train_liked.loc[train_liked["userId"] == user, "movieId"]}
        assert set(split.train.likes[row].indices) == mine
    # every query is a liked movie of a test user who liked at least two of the training users' movies
    test_sets = [
        {column[int(m)] for m in group["movieId"] if int(m) in column}
        for _, group in liked[liked["userId"].isin(test_users)].groupby("userId")
    ]
    expected = sorted(i for s in test_sets if len(s) >= 2 for i in s)
    assert 0 < len(expected) <= cfg.holdout_max_queries  # every query kept: no sample drawn at this size
    assert split.queries_total == len(expected) and sorted(split.queries.items.tolist()) == expected


def test_the_dimension_sweep_against_the_dense_objective(fitted):
    """The sweep's table in memory: each d's optimum is no worse than the top-d eigenpairs of X (a feasible point)
    and no better at a smaller d, its share of ||X||_F^2 is taken from X itself, gradient descent never beats it,
    and the rule picks the smallest d within 0.005 of the best HitRate."""
    from embedlab.movies.dims import step_dim_sweep
    from embedlab.movies.evaluate import at_k
    from embedlab.movies.holdout import fit_contenders, step_holdout

    cfg, prepared, fit, x = fitted
    cfg = dataclasses.replace(cfg, anchors=[], dim_sweep=[1, 2, 3], dim_sweep_lr_steps=0)
    out = step_dim_sweep(cfg, fit, step_holdout(cfg, fit_contenders(cfg, prepared, fit)))
    table = out.tables["dim_sweep"].df
    assert table["dim"].tolist() == [1, 2, 3]
    lam, u = np.linalg.eigh(x.astype(np.float64))
    for d, cost in zip(table["dim"], table["spectral_cost"]):
        top = np.argsort(lam)[::-1][:d]
        v = u[:, top] * np.sqrt(np.clip(lam[top], 0, None))
        assert cost <= dense_cost(x, v) * (1 + 1e-9)
    assert table["spectral_cost"].is_monotonic_decreasing
    assert table["relative_cost"].tolist() == pytest.approx((table["spectral_cost"] / float((x**2).sum())).tolist())
    assert (table["gap"] >= -1e-6).all()
    assert ((table["status"] == "converged") == (table["gap"] <= cfg.converged_gap)).all()
    hits = table[at_k("hit_rate", cfg.top_k)]
    assert hits.between(0, 1).all()
    (choice,) = out.results
    assert choice.chosen_by_rule == min(d for d, h in zip(table["dim"], hits) if h >= hits.max() - 0.005)
    assert "dim_sweep" in out.figures


@pytest.mark.parametrize("cap", [3, 10_000])
def test_the_anchors_candidates_are_fitted_on_at_most_anchor_max_users_and_the_choice_on_all(data, monkeypatch, cap):
    """The tuning slice's fitting users, sampled down to ``anchor_max_users`` when there are more (never a validation
    user); the chosen setting refitted on every training user."""
    from embedlab.movies import holdout
    from embedlab.movies.evaluate import split_users

    cfg, prepared = data
    cfg = dataclasses.replace(cfg, anchors=["ease"], ease_lambdas=[1.0, 100.0], anchor_max_users=cap)
    split = holdout.HoldoutSplit.make(cfg, prepared.ratings, prepared.movies, prepared.co)
    seen = []
    real_tune = holdout.tune
    monkeypatch.setattr(holdout, "tune", lambda *a: seen.append(a) or real_tune(*a))
    holdout.tuned_anchors(cfg, split)
    (args,) = seen
    fit_likes, train_likes = args[2], args[6]
    rows = split.train.likes.toarray()
    fit_rows, _ = split_users(np.arange(len(rows)), cfg.anchor_validation_fraction, cfg.holdout_seed + 1)
    assert fit_likes.shape[0] == min(cap, len(fit_rows)) and len(fit_rows) > 3
    mine = {r.tobytes() for r in rows[fit_rows]}
    assert all(r.tobytes() in mine for r in fit_likes.toarray())  # each one a fitting user's likes
    assert (train_likes != split.train.likes).nnz == 0  # the refit sees every training user
