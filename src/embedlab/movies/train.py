"""Gradient descent on the co-like cost: one run, and the optimiser x learning-rate sweep.

Every run starts from the same seeded initial V, uses torch.optim with the closed-form gradient
(no autograd graph: the cost needs one sparse product per step), records the cost at every
iteration and stops early when it diverges (non-finite, or far above its start).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from embedlab.errors import InputError, UserError
from embedlab.movies.objective import XOperator, cost_and_grad

#: torch.optim constructors by the names used in configs and reports. ``fused=True`` (one kernel per
#: step instead of several passes over V) where torch offers it on the CPU; RMSprop has no fused form.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr, fused=True),
    "nesterov": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True, fused=True),
    "adagrad": lambda p, lr: torch.optim.Adagrad(p, lr=lr, fused=True),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr, fused=True),
}


def sweep_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """One of the sweep's named optimisers over ``params`` at rate ``lr``; an unknown name is an error listing the valid
    ones."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise InputError(f"unknown optimiser {name!r}; choose from {', '.join(OPTIMIZERS)}") from None
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"learning rate must be a positive finite number, got {lr!r}")
    return factory(params, lr)


def initial_embedding(n_items: int, dim: int, seed: int, scale: float) -> torch.Tensor:
    """The shared starting point: i.i.d. N(0, scale^2) entries from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_items, dim, generator=gen) * scale


@dataclass
class RunResult:
    """One optimiser/learning-rate run: its loss history, final V and how it ended."""

    optimizer: str
    lr: float
    losses: list[float]
    v: torch.Tensor
    status: str  # "finished" (ran to the end or hit the tolerance) or "diverged"
    iterations: int
    seconds: float
    kept_loss: float | None = None  # run to convergence: the cost of the returned V (the lowest seen)
    state: dict | None = field(default=None, repr=False)  # the optimiser's state after the last step: the run can go on

    @property
    def final_loss(self) -> float:
        if self.kept_loss is not None:
            return self.kept_loss
        return self.losses[-1] if self.losses else math.inf

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def gap(self, c_star: float) -> float:
        """How far above the optimum ``c_star`` the run ended, as a fraction of it (NaN when it diverged)."""
        return (self.final_loss - c_star) / c_star if not self.diverged else float("nan")

    def verdict(self, c_star: float, tol: float) -> str:
        """ "diverged", "converged" (within ``tol`` of ``c_star``, relatively) or "not converged"."""
        if self.diverged:
            return "diverged"
        return "converged" if self.gap(c_star) <= tol else "not converged"


@dataclass
class Lowest:
    """Run to convergence: the lowest cost seen by each iteration, and the V that had it."""

    rel_tol: float
    window: int
    costs: list[float] = field(default_factory=list)
    v: torch.Tensor | None = None

    def stalled(self, it: int, loss: float, v: torch.Tensor | None) -> bool:
        """Record iteration ``it``; True once the lowest cost fell by <= rel_tol (relative) over the last ``window``.
        ``v`` None: an iteration replayed from its cost alone (the V of a new lowest is then unknown)."""
        if not self.costs or loss < self.costs[-1]:
            self.v = None if v is None else v.detach().clone()
        self.costs.append(min(loss, self.costs[-1]) if self.costs else loss)
        return it >= self.window and self.costs[-self.window - 1] - self.costs[-1] <= self.rel_tol * abs(self.costs[-1])


@dataclass(frozen=True)
class Objective:
    """The cost c(V) = sum over i != j of (v_i . v_j - X_ij)^2: X (a factored operator or a dense tensor) and c(0) =
    ||X||_F^2."""

    x: XOperator | torch.Tensor
    fro_sq: float


@dataclass(frozen=True)
class Budget:
    """How long a run may go: ``iterations`` steps at most; stopped as diverged above ``divergence_factor`` times its
    start; with ``rel_tol > 0``, run to convergence (the lowest cost fell by less than that over ``window`` steps)."""

    iterations: int
    divergence_factor: float = 10.0
    rel_tol: float = 0.0
    window: int = 50


def fit(
    objective: Objective,
    v0: torch.Tensor,
    optimizer: str,
    lr: float,
    budget: Budget,
    progress: Callable[[int, float], None] | None = None,
    keep_state: bool = False,
) -> RunResult:
    """Minimise c(V) from ``v0`` for ``budget.iterations`` steps of a torch.optim optimiser.

    Divergence: the run stops, marked "diverged", as soon as the cost is non-finite or exceeds
    ``divergence_factor`` times the larger of c(v0) and c(0) = ||X||_F^2. With ``rel_tol > 0`` the
    run goes to convergence: it keeps the lowest-cost V seen (an adaptive optimiser with a constant
    rate oscillates near the optimum, so its last V is not its best) and stops once that lowest cost
    fell by less than ``rel_tol`` (relative) over the last ``window`` iterations. ``keep_state``: the
    result carries the optimiser's state, so that ``go_on`` can continue the run.
    """
    v = v0.clone().requires_grad_(False)
    result = _descend(
        objective, v, (optimizer, lr, sweep_optimizer(optimizer, [v], lr)), budget, ([], 0.0), progress, keep_state
    )
    assert result is not None  # a fresh run knows every V it saw
    return result


def go_on(objective: Objective, v0: torch.Tensor, run: RunResult, budget: Budget) -> RunResult:
    """``fit(objective, v0, run.optimizer, run.lr, budget)``, taking up ``run`` (the first ``run.iterations`` steps of
    the same start, kept with ``keep_state``) where it stopped instead of repeating its steps.

    The earlier iterations are replayed from their costs: if the budget would have stopped among them, or if the
    lowest cost of the whole run is one whose V was not kept, the run is made again from ``v0``.
    """
    if run.state is None or run.diverged or not run.losses or run.iterations > budget.iterations:
        return fit(objective, v0, run.optimizer, run.lr, budget)
    v = run.v.clone()
    opt = sweep_optimizer(run.optimizer, [v], run.lr)
    opt.load_state_dict(copy.deepcopy(run.state))
    result = _descend(objective, v, (run.optimizer, run.lr, opt), budget, (run.losses[:-1], run.seconds), None, False)
    return result if result is not None else fit(objective, v0, run.optimizer, run.lr, budget)


def _descend(
    objective: Objective,
    v: torch.Tensor,
    named: tuple[str, float, torch.optim.Optimizer],
    budget: Budget,
    done: tuple[list[float], float],
    progress: Callable[[int, float], None] | None,
    keep_state: bool,
) -> RunResult | None:
    """The loop of ``fit`` on parameter ``v`` of the optimiser in ``named`` (name, rate, optimiser), from iteration
    ``len(before)``, where ``done`` = (before, seconds) are the costs of the iterations already made and their time;
    None when the outcome is a replayed iteration's V."""
    name, lr, opt = named
    before, seconds = done
    x, x_fro_sq = objective.x, objective.fro_sq
    iterations, divergence_factor, rel_tol, window = (
        budget.iterations,
        budget.divergence_factor,
        budget.rel_tol,
        budget.window,
    )
    losses: list[float] = list(before)
    lowest = Lowest(rel_tol, window)
    if rel_tol > 0 and any(lowest.stalled(it, loss, None) for it, loss in enumerate(before)):
        return None
    status = "finished"
    start = time.perf_counter() - seconds
    limit = divergence_factor * max(losses[0], x_fro_sq) if losses else math.inf
    for it in range(len(before), iterations + 1):
        loss, grad = cost_and_grad(v, x, x_fro_sq)
        losses.append(loss)
        if it == 0:
            limit = divergence_factor * max(loss, x_fro_sq)
        # a non-finite gradient makes the next cost non-finite; only the last one is checked directly
        if not math.isfinite(loss) or loss > limit or (it == iterations and not torch.isfinite(grad).all()):
            status = "diverged"
            break
        if progress is not None:
            progress(it, loss)
        if rel_tol > 0 and lowest.stalled(it, loss, v):  # the last iteration's V is a candidate too
            break
        if it == iterations:
            break
        v.grad = grad
        opt.step()
    keep = rel_tol > 0 and status != "diverged"
    if keep and lowest.v is None:
        return None
    return RunResult(
        optimizer=name,
        lr=lr,
        losses=losses,
        v=lowest.v if keep else v.detach(),
        status=status,
        iterations=len(losses) - 1,  # type: ignore[arg-type]
        seconds=time.perf_counter() - start,
        kept_loss=lowest.costs[-1] if keep else None,
        state=opt.state_dict() if keep_state and status != "diverged" else None,
    )


T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may use: one independent run per core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Hold torch's intra-op threads at ``n`` inside the block, then restore them."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` with independent runs on ``workers`` threads, results in input order.

    The runs of a sweep are small dense products (M x d by d x d) that torch's own threads do not
    speed up (measured at d = 100: 2 threads 1.0x), while two runs side by side each keep a full
    core (2 processes: 4.1 ms per iteration each, as fast as one alone). torch and BLAS release the
    GIL, so threads suffice; each run's arithmetic does not depend on ``workers`` (torch's threads are
    split between the workers, one each on 2 cores). ``workers <= 1`` is a plain loop: needed under
    torch.distributed, where every rank must make its collective calls in the same order.
    """
    workers = min(workers, len(items))
    if workers <= 1:
        yield from map(fn, items)
        return
    with torch_threads(torch.get_num_threads() // workers), ThreadPoolExecutor(workers) as pool:
        yield from pool.map(fn, items)


def sweep(
    objective: Objective,
    v0: torch.Tensor,
    grid: dict[str, Sequence[float]],
    budget: Budget,
    on_run: Callable[[RunResult], None] | None = None,
    progress_factory: Callable[[str, float], Callable[[int, float], None] | None] | None = None,
    workers: int = 1,
) -> list[RunResult]:
    """Run every (optimiser, lr) of ``grid`` from the same ``v0``, ``workers`` at a time; a diverged
    run never stops the sweep. Results (and ``on_run`` calls) come in grid order. Each result carries its
    optimiser's state, so that ``go_on`` can continue it; ``on_run`` may drop it (``result.state = None``)."""
    jobs = [(name, lr) for name, lrs in grid.items() for lr in lrs]

    def one(job: tuple[str, float]) -> RunResult:
        name, lr = job
        prog = progress_factory(name, lr) if progress_factory else None
        return fit(objective, v0, name, lr, budget, prog, keep_state=True)

    results: list[RunResult] = []
    for res in parallel_map(one, jobs, workers):
        results.append(res)
        if on_run is not None:
            on_run(res)
    return results


class SweepDiverged(UserError, RuntimeError):
    """No setting of the optimiser x learning-rate sweep gave a usable embedding."""


def best_run(results: Sequence[RunResult]) -> RunResult:
    """The non-diverged run with the lowest final cost."""
    ok = [r for r in results if not r.diverged]
    if not ok:
        names = ", ".join(sorted({f"{r.optimizer} lr={r.lr:g}" for r in results}))
        raise SweepDiverged(
            f"every run of the sweep diverged ({names}); lower the learning rates, e.g. --lrs adam=0.01,0.03"
        )
    return min(ok, key=lambda r: r.final_loss)
