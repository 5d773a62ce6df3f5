"""The dimension sweep: for each d, the spectral optimum, gradient descent's gap to it and the held-out quality of the
spectral embedding fitted on the training users; the smallest d within a tolerance of the best is the one the rule
picks."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch

from embedlab.config import MoviesConfig
from embedlab.errors import InputError
from embedlab.movies import figures
from embedlab.movies.evaluate import at_k
from embedlab.movies.holdout import HeldOut, embedding_holdout
from embedlab.movies.objective import CoLikeOperator, spectral_optimum
from embedlab.movies.steps import Fitted, fit_from_start
from embedlab.movies.train import Budget, RunResult
from embedlab.results import DimChoice
from embedlab.store import Output, Table

log = logging.getLogger(__name__).info


def lr_ladder(best_lr: float, steps: int) -> list[float]:
    """Learning rates to try at another d: the sweep's best, then 3x lower, ``steps`` times.

    A larger d adds directions with small eigenvalues and entries of V; the step that suits d = 32
    can overshoot them, so every d gets the largest rate of the ladder that converges."""
    return [best_lr / 3**i for i in range(steps + 1)]


def converged_fit(
    cfg: MoviesConfig, op: CoLikeOperator, dim: int, settings: list[tuple[str, float]], c_star: float
) -> tuple[RunResult, list[str]]:
    """Try ``settings`` (optimiser, lr) in order and stop at the first run that converges; the best run and what each
    did."""
    tried: list[str] = []
    best: RunResult | None = None
    r: RunResult | None = None
    for optimizer, lr in settings:
        r = fit_from_start(cfg, op, dim, optimizer, lr, Budget(cfg.iterations, cfg.divergence_factor))
        tried.append(f"{optimizer} {lr:.3g}: " + ("diverged" if r.diverged else f"{100 * r.gap(c_star):.2g} %"))
        if not r.diverged and (best is None or r.final_loss < best.final_loss):
            best = r
        if not r.diverged and r.gap(c_star) <= cfg.converged_gap:
            break
    assert r is not None
    return (best if best is not None else r), tried


def dim_settings(fitted: Fitted, steps: int) -> list[tuple[str, float]]:
    """What the dimension sweep tries at each d: each optimiser's best rate at the default d, best optimiser
    first, each followed by its 3x-lower ladder (``lr_ladder``)."""
    per_opt: dict[str, RunResult] = {}
    for r in fitted.results:
        if not r.diverged and (r.optimizer not in per_opt or r.final_loss < per_opt[r.optimizer].final_loss):
            per_opt[r.optimizer] = r
    ranked = sorted(per_opt.values(), key=lambda r: r.final_loss)
    return [(r.optimizer, lr) for r in ranked for lr in lr_ladder(r.lr, steps)]


def dimension_sweep(cfg: MoviesConfig, fitted: Fitted, held: HeldOut) -> pd.DataFrame:
    """For each d: the spectral optimum, gradient descent's gap to it (the best settings of the sweep,
    learning rates lowered until a run converges) and the held-out HitRate@k of the spectral
    embedding fitted on the training users."""
    op, op_train = fitted.op, held.op
    settings = dim_settings(fitted, cfg.dim_sweep_lr_steps)
    k = cfg.top_k
    rows = []
    for d in cfg.dim_sweep:
        if not 1 <= d < min(op.shape[0], op_train.shape[0]):
            raise InputError(
                f"--dim-sweep value {d} must be between 1 and {min(op.shape[0], op_train.shape[0]) - 1} "
                "(the number of liked movies)"
            )
        log(f"[dims] d={d}")
        t0 = time.perf_counter()
        spec = spectral_optimum(op, d, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
        gd, tried = converged_fit(cfg, op, d, settings, spec.cost)
        spec_train = spectral_optimum(op_train, d, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
        hold = embedding_holdout(cfg, held.split, torch.from_numpy(spec_train.v.astype(np.float32)))
        rows.append(
            {
                "dim": d,
                "spectral_cost": spec.cost,
                "relative_cost": spec.cost / op.fro_sq,
                "gap": gd.gap(spec.cost),
                "status": gd.verdict(spec.cost, cfg.converged_gap),
                "optimizer": gd.optimizer,
                "lr": gd.lr,
                "tried": "; ".join(tried),
                at_k("hit_rate", k): hold[at_k("hit_rate", k)],
                at_k("mean_hits", k): hold[at_k("mean_hits", k)],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    return pd.DataFrame(rows)


def choose_dim(dim_df: pd.DataFrame, k: int, tolerance: float = 0.005) -> int:
    """The smallest d whose held-out HitRate@k is within ``tolerance`` of the best d's: quality first, then size."""
    col = at_k("hit_rate", k)
    best = dim_df[col].max()
    return int(dim_df.loc[dim_df[col] >= best - tolerance, "dim"].min())


def step_dim_sweep(cfg: MoviesConfig, fitted: Fitted, held: HeldOut) -> Output:
    """The spectral optimum, gradient descent and held-out quality for each d of ``dim_sweep``; the d the rule picks."""
    dim_df = dimension_sweep(cfg, fitted, held)
    result = DimChoice(chosen_by_rule=int(choose_dim(dim_df, cfg.top_k)), configured_dim=cfg.dim)
    fig = figures.dim_sweep(dim_df["dim"], dim_df["gap"], dim_df[at_k("hit_rate", cfg.top_k)], dim_df["relative_cost"])
    return Output(results=(result,), tables={"dim_sweep": Table(dim_df)}, figures={"dim_sweep": fig})
