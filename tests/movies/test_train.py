import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from embedlab.movies.objective import cost_and_grad, frobenius_sq, spectral_optimum, to_torch_csr
from embedlab.movies.train import (
    OPTIMIZERS,
    Budget,
    Objective,
    best_run,
    fit,
    initial_embedding,
    sweep,
    sweep_optimizer,
)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    low = rng.random((25, 3))
    x = np.round(20 * low @ low.T)
    np.fill_diagonal(x, 0)
    xs = sp.csr_matrix(x)
    return xs, to_torch_csr(xs), frobenius_sq(xs)


def test_every_optimiser_lowers_the_cost(problem):
    xs, xt, fro = problem
    v0 = initial_embedding(25, 3, seed=0, scale=0.1)
    lrs = {"sgd": 1e-4, "nesterov": 3e-5, "adagrad": 0.1, "rmsprop": 0.01, "adam": 0.05}
    assert set(lrs) == set(OPTIMIZERS)
    for name, lr in lrs.items():
        r = fit(Objective(xt, fro), v0, name, lr, Budget(200))
        assert r.status == "finished" and r.iterations == 200 and len(r.losses) == 201
        assert r.final_loss < 0.5 * r.losses[0], name


def test_adam_reaches_the_spectral_optimum(problem):
    xs, xt, fro = problem
    r = fit(Objective(xt, fro), initial_embedding(25, 3, 0, 0.1), "adam", 0.05, Budget(3000))
    c_star = spectral_optimum(xs, 3).cost
    assert r.final_loss == pytest.approx(c_star, rel=1e-3)


def test_divergence_is_detected_and_the_sweep_goes_on(problem):
    _, xt, fro = problem
    v0 = initial_embedding(25, 3, 0, 0.1)
    seen = []
    results = sweep(Objective(xt, fro), v0, {"sgd": [1e-4, 10.0], "adam": [0.05]}, Budget(50), on_run=seen.append)
    assert [r.status for r in results] == ["finished", "diverged", "finished"]
    assert len(seen) == 3
    assert results[1].iterations < 50  # stopped early
    assert best_run(results).optimizer in {"sgd", "adam"}
    assert not math.isnan(best_run(results).final_loss)


def test_all_diverged_and_bad_names_are_clear_errors(problem):
    _, xt, fro = problem
    v0 = initial_embedding(25, 3, 0, 0.1)
    results = sweep(Objective(xt, fro), v0, {"sgd": [100.0]}, Budget(20))
    with pytest.raises(RuntimeError, match="lower the learning rates"):
        best_run(results)
    with pytest.raises(ValueError, match="unknown optimiser 'lbfgs'"):
        sweep_optimizer("lbfgs", [torch.zeros(1)], 0.1)
    with pytest.raises(ValueError, match="positive finite"):
        sweep_optimizer("adam", [torch.zeros(1)], -1.0)


def test_same_seed_same_start_and_result(problem):
    _, xt, fro = problem
    a = fit(Objective(xt, fro), initial_embedding(25, 3, 7, 0.1), "adam", 0.05, Budget(30))
    b = fit(Objective(xt, fro), initial_embedding(25, 3, 7, 0.1), "adam", 0.05, Budget(30))
    assert a.losses == b.losses


def test_run_to_convergence_returns_the_lowest_cost_v(problem):
    xs, xt, fro = problem
    from embedlab.movies.objective import cost_and_grad

    v0 = initial_embedding(25, 3, 0, 0.1)
    # a large constant rate oscillates
    r = fit(Objective(xt, fro), v0, "adam", 0.3, Budget(2000, rel_tol=1e-6, window=20))
    assert r.status == "finished" and r.iterations < 2000
    assert r.final_loss == pytest.approx(min(r.losses)) and r.final_loss <= r.losses[-1]
    assert cost_and_grad(r.v, xt, fro)[0] == pytest.approx(r.final_loss, rel=1e-6)


def test_parallel_sweep_returns_the_serial_results_in_grid_order(problem):
    """One run per core changes nothing but the wall time: same runs, same order, same losses."""
    from embedlab.movies.train import parallel_map

    _, xt, fro = problem
    v0 = initial_embedding(25, 3, 0, 0.1)
    grid = {"sgd": [1e-4, 10.0], "adam": [0.05, 0.01], "rmsprop": [0.01]}
    serial = sweep(Objective(xt, fro), v0, grid, Budget(40), workers=1)
    threads = torch.get_num_threads()
    seen = []
    parallel = sweep(Objective(xt, fro), v0, grid, Budget(40), workers=3, on_run=seen.append)
    assert torch.get_num_threads() == threads  # restored
    assert [(r.optimizer, r.lr, r.status) for r in parallel] == [(r.optimizer, r.lr, r.status) for r in serial]
    assert [r.lr for r in seen] == [1e-4, 10.0, 0.05, 0.01, 0.01]
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
    assert list(parallel_map(lambda i: i * i, list(range(7)), workers=4)) == [i * i for i in range(7)]


@pytest.mark.parametrize(
    "name,lr", [("sgd", 1e-4), ("nesterov", 3e-5), ("adagrad", 0.1), ("rmsprop", 0.01), ("adam", 0.05), ("adam", 0.3)]
)
@pytest.mark.parametrize("first,budget", [(40, 300), (40, 40), (250, 300), (320, 300)])
def test_going_on_from_a_kept_run_equals_the_run_made_afresh(problem, name, lr, first, budget):
    """``go_on`` from the sweep's first steps gives what one fresh run to convergence gives: the same costs, the same
    kept V and cost, the same stop; including budgets that stop within the first steps (then it runs afresh) and a
    large Adam rate whose lowest cost comes early (its V was not kept: afresh)."""
    from embedlab.movies.train import go_on

    _, xt, fro = problem
    v0 = initial_embedding(25, 3, 0, 0.1)
    to_convergence = Budget(budget, rel_tol=1e-6, window=20)
    fresh = fit(Objective(xt, fro), v0, name, lr, to_convergence)
    kept = fit(Objective(xt, fro), v0, name, lr, Budget(first), keep_state=True)
    assert kept.state is not None
    went_on = go_on(Objective(xt, fro), v0, kept, to_convergence)
    assert went_on.losses == fresh.losses and went_on.iterations == fresh.iterations and went_on.status == fresh.status
    assert went_on.final_loss == fresh.final_loss and torch.equal(went_on.v, fresh.v)
    assert kept.losses == fresh.losses[: len(kept.losses)] or fresh.iterations < first  # the same first steps


def test_the_last_iteration_counts_when_the_budget_ends_the_run(problem):
    """A run to convergence cut by its iteration budget keeps the lowest cost including the last iteration's."""
    _, xt, fro = problem
    r = fit(Objective(xt, fro), initial_embedding(25, 3, 0, 0.1), "sgd", 1e-4, Budget(30, rel_tol=1e-12, window=20))
    assert r.iterations == 30 and r.final_loss == min(r.losses) == r.losses[-1]


def test_going_on_makes_only_the_steps_left(problem, monkeypatch):
    import embedlab.movies.train as train

    _, xt, fro = problem
    v0 = initial_embedding(25, 3, 0, 0.1)
    to_convergence = Budget(300, rel_tol=1e-6, window=20)
    fresh = fit(Objective(xt, fro), v0, "sgd", 1e-4, to_convergence)
    kept = fit(Objective(xt, fro), v0, "sgd", 1e-4, Budget(40), keep_state=True)
    calls = []
    monkeypatch.setattr(train, "cost_and_grad", lambda *a: calls.append(1) or cost_and_grad(*a))
    went_on = train.go_on(Objective(xt, fro), v0, kept, to_convergence)
    assert went_on.losses == fresh.losses and len(calls) == fresh.iterations - 40 + 1
