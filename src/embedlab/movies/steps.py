"""2B, 2C and the map: each a function from the earlier steps' products to its own, with its output for the run folder.

X is never formed: the fit works on L (``objective.CoLikeOperator``). Under torchrun every rank runs the same steps in
lockstep on its share of the users.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from embedlab.config import MoviesConfig
from embedlab.distributed import current
from embedlab.files import npz_bytes
from embedlab.logs import Progress
from embedlab.movies import figures
from embedlab.movies.evaluate import at_k
from embedlab.movies.movielens import slug
from embedlab.movies.objective import CoLikeOperator, SpectralSolution, spectral_optimum
from embedlab.movies.prepare import Prepared, Query, make_operator
from embedlab.movies.recommend import jaccard, rank_correlation, similar_items, similarity
from embedlab.movies.tables import loss_histories, most_specific_genre, recommendation_table, sweep_table
from embedlab.movies.train import (
    Budget,
    Objective,
    RunResult,
    best_run,
    default_workers,
    fit,
    go_on,
    initial_embedding,
    parallel_map,
    sweep,
)
from embedlab.results import Candidate, FitSummary, MoviesRun, Recommendations, Stability
from embedlab.store import Output, Table

log = logging.getLogger(__name__).info


@dataclass
class Fitted:
    """What 2B produces: every run of the sweep, the best one, the final embedding, the spectral reference and the
    operator they were fitted on, with 2B's output for the run folder.

    ``final`` is the best setting run to convergence: the sweep compares optimisers on an equal budget,
    the recommendations use the converged embedding (the last 0.1 % of the cost is in the small
    eigen-directions that separate rarely liked movies).
    """

    results: list[RunResult]
    best: RunResult
    final: RunResult
    spectral: SpectralSolution
    table: pd.DataFrame
    op: CoLikeOperator
    out: Output


@dataclass
class Recommended:
    """What 2C produces: the top lists (rows of X, by query as typed) and 2C's output."""

    top_lists: dict[str, list[int]]
    out: Output


def _progress_bar(
    total: int, enabled: bool = True
) -> tuple[Progress, Callable[[str, float], Callable[[int, float], None]]]:
    bar = Progress(total, "sweep", "it", enabled=enabled, dynamic_ncols=True, mininterval=0.5)

    def factory(name: str, lr: float) -> Callable[[int, float], None]:
        bar.set_postfix_str(f"{name} lr={lr:g}")

        def step(it: int, loss: float) -> None:
            if it > 0:
                bar.update(1)

        return step

    return bar, factory


def workers() -> int:
    """Independent runs side by side, one per core; one at a time under torch.distributed (collectives in lockstep)."""
    return 1 if current().active else default_workers()


def final_budget(cfg: MoviesConfig) -> Budget:
    """A run to convergence: at most ``final_iterations`` steps, stopped once the cost stalls."""
    return Budget(cfg.final_iterations, cfg.divergence_factor, rel_tol=cfg.final_rel_tol)


def fit_from_start(
    cfg: MoviesConfig, op: CoLikeOperator, dim: int, optimizer: str, lr: float, budget: Budget
) -> RunResult:
    """One run of (optimizer, lr) from the config's seeded start at dimension ``dim``, within ``budget``."""
    v0 = initial_embedding(op.shape[0], dim, cfg.seed, cfg.init_scale)
    return fit(Objective(op, op.fro_sq), v0, optimizer, lr, budget)


def final_fit(
    cfg: MoviesConfig, op: CoLikeOperator, results: list[RunResult], c_star: float, n_workers: int = 1
) -> tuple[RunResult, list[RunResult]]:
    """The embedding that recommends: every converged setting of the sweep (or the best one, if none
    converged) run again to convergence; the lowest cost wins. Ranking on the 500-step budget is not
    enough: Adam with a constant rate oscillates at a small distance from the optimum, momentum SGD
    converges to it, and the last hundredths of a per cent of the cost change held-out quality.
    A run the sweep kept the state of goes on from where the sweep left it (``go_on``): its first steps are not
    made twice."""
    converged = [r for r in results if r.verdict(c_star, cfg.converged_gap) == "converged"] or [best_run(results)]
    v0 = initial_embedding(op.shape[0], cfg.dim, cfg.seed, cfg.init_scale)
    finals = list(
        parallel_map(lambda r: go_on(Objective(op, op.fro_sq), v0, r, final_budget(cfg)), converged, n_workers)
    )
    ok = [r for r in finals if not r.diverged]
    return (min(ok, key=lambda r: r.final_loss) if ok else best_run(results)), finals


def run_sweep(cfg: MoviesConfig, op: CoLikeOperator, v0: torch.Tensor, c_star: float) -> list[RunResult]:
    """Every (optimiser, learning rate) of ``cfg.grid`` from ``v0`` on an equal budget, with a progress bar and a line
    per run. Only the leader's state and the converged runs' states are kept: they are the ones ``final_fit`` may go
    on from."""
    n_runs = sum(len(v) for v in cfg.grid.values())
    log(f"[2B] sweep: {n_runs} runs x {cfg.iterations} iterations")
    bar, factory = _progress_bar(n_runs * cfg.iterations, current().is_main)
    leader: list[RunResult] = []  # the best run so far

    def finish(r: RunResult) -> None:
        if not r.diverged and (not leader or r.final_loss < leader[0].final_loss):
            if leader and leader[0].verdict(c_star, cfg.converged_gap) != "converged":
                leader[0].state = None
            leader[:] = [r]
        elif r.verdict(c_star, cfg.converged_gap) != "converged":
            r.state = None
        bar.update(cfg.iterations - max(r.iterations, 0) if r.diverged else 0)
        gap = f"gap {100 * r.gap(c_star):.3g} %" if not r.diverged else f"diverged at iteration {r.iterations}"
        bar.write(f"  {r.optimizer:<8} lr={r.lr:<8g} {gap}  ({r.seconds:.1f} s)")

    results = sweep(
        Objective(op, op.fro_sq),
        v0,
        cfg.grid,
        Budget(cfg.iterations, cfg.divergence_factor),
        on_run=finish,
        progress_factory=factory,
        workers=workers(),
    )
    bar.close()
    return results


def step_2b_fit(cfg: MoviesConfig, data: Prepared) -> Fitted:
    """2B: the spectral reference and the optimiser x learning-rate sweep, all on the factored operator."""
    dist = current()
    op = make_operator(data.co.likes, data.summary.fro_sq)
    v0 = initial_embedding(data.co.n_movies, cfg.dim, cfg.seed, cfg.init_scale)
    log(f"[2B] spectral reference optimum, d={cfg.dim}")
    t0 = time.perf_counter()
    spec = spectral_optimum(op, cfg.dim, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
    spec_s = time.perf_counter() - t0
    c_star = spec.cost
    t0 = time.perf_counter()
    results = run_sweep(cfg, op, v0, c_star)
    sweep_s = time.perf_counter() - t0
    table = sweep_table(results, c_star, cfg.converged_gap)
    best = best_run(results)
    final, finals = final_fit(cfg, op, results, c_star, workers())
    for r in results:
        r.state = None
    best_per_opt = [
        best_run([r for r in results if r.optimizer == name])
        for name in cfg.grid
        if any(not r.diverged for r in results if r.optimizer == name)
    ]
    summary = FitSummary(
        **_fit_metrics(cfg, results, best, final, finals, spec, op.fro_sq),
        spectral_seconds=round(spec_s, 2),
        sweep_seconds=round(sweep_s, 1),
        runs_diverged=int((table["status"] == "diverged").sum()),
        runs_converged=int((table["status"] == "converged").sum()),
        processes=dist.world,
    )
    out = Output(
        results=(summary,),
        tables={
            "sweep": Table(table),
            "spectral_rounds": Table(
                pd.DataFrame({"round": np.arange(1, len(spec.history) + 1), "cost": spec.history})
            ),
        },
        figures={
            "loss_by_optimizer": figures.loss_curves_by_optimizer(results, c_star, op.fro_sq),
            "loss_best_runs": figures.best_runs_together(best_per_opt, c_star, op.fro_sq),
        },
        artefacts={
            "loss_histories.csv": loss_histories(results),
            "embeddings.npz": npz_bytes(
                v=final.v.numpy(),
                v_sweep_best=best.v.numpy(),
                v_spectral=spec.v.astype(np.float32),
                movie_ids=data.co.movie_ids,
                like_counts=data.co.like_counts,
            ),
        },
    )
    log(
        f"[2B] best: {best.optimizer} lr={best.lr:g}, cost {best.final_loss:.6g}, gap to spectral optimum "
        f"{100 * best.gap(c_star):.3f} % ({sweep_s:.1f} s); run to convergence: {final.optimizer} lr={final.lr:g}, "
        f"{final.iterations} iterations, {100 * final.gap(c_star):.4f} % above"
    )
    return Fitted(results, best, final, spec, table, op, out)


def _fit_metrics(
    cfg: MoviesConfig,
    results: list[RunResult],
    best: RunResult,
    final: RunResult,
    finals: list[RunResult],
    spec: SpectralSolution,
    fro_sq: float,
) -> dict[str, object]:
    c_star = spec.cost
    return {
        "dim": cfg.dim,
        "iterations": cfg.iterations,
        "cost_at_zero": fro_sq,
        "cost_at_init": results[0].losses[0],
        "spectral_cost": c_star,
        "spectral_rounds": len(spec.history),
        "spectral_converged": spec.converged,
        "spectral_relative_cost": c_star / fro_sq,
        "best_optimizer": best.optimizer,
        "best_lr": best.lr,
        "best_cost": best.final_loss,
        "best_gap_to_optimum": best.gap(c_star),
        "runs": len(results),
        "final_optimizer": final.optimizer,
        "final_lr": final.lr,
        "final_iterations": final.iterations,
        "final_gap_to_optimum": final.gap(c_star),
        "final_seconds": round(final.seconds, 1),
        "final_candidates": [Candidate(r.optimizer, r.lr, r.iterations, r.gap(c_star)) for r in finals],
        "seconds_per_iteration": float(
            sum(r.seconds for r in results) / max(1, sum(r.iterations + 1 for r in results))
        ),
    }


def step_2c_recommend(cfg: MoviesConfig, data: Prepared, fitted: Fitted) -> Recommended:
    """2C: the top-k tables of the queries, by the configured metric and by the other one."""
    other = "dot" if cfg.metric == "cosine" else "cosine"
    top_lists: dict[str, list[int]] = {}
    top: dict[str, list[str]] = {}
    tables: dict[str, Table] = {}
    mean_likers: dict[str, dict[str, float]] = {cfg.metric: {}, other: {}}
    for q in data.queries:
        table, top_lists[q.text] = recommendation_table(
            fitted.final.v, q.row, data.items, data.eligible, cfg.top_k, cfg.metric
        )
        alt, _ = recommendation_table(fitted.final.v, q.row, data.items, data.eligible, cfg.top_k, other)
        tables[f"recs_{slug(q.text)}"] = Table(table)
        tables[f"recs_{other}_{slug(q.text)}"] = Table(alt)
        top[q.title] = list(table["title"])
        mean_likers[cfg.metric][q.title] = float(table["likes"].mean())
        mean_likers[other][q.title] = float(alt["likes"].mean())
    result = Recommendations(
        metric=cfg.metric,
        min_likes=cfg.min_likes,
        eligible_movies=int(data.eligible.sum()),
        query_titles={q.text: q.title for q in data.queries},
        top=top,
        mean_likers=mean_likers,
    )
    log("[2C] top-10 for " + ", ".join(q.title for q in data.queries))
    return Recommended(top_lists, Output(results=(result,), tables=tables))


def step_stability(cfg: MoviesConfig, data: Prepared, fitted: Fitted, top_lists: dict[str, list[int]]) -> Output:
    """2C, second half: does each run (and the spectral optimum) recommend what the best run does?"""
    c_star = fitted.spectral.cost
    candidates: list[tuple[str, float, str, float, torch.Tensor]] = [
        (r.optimizer, r.lr, r.verdict(c_star, cfg.converged_gap), r.gap(c_star), r.v)
        for r in fitted.results
        if not r.diverged and torch.isfinite(r.v).all()
    ]
    candidates.append(
        ("spectral", float("nan"), "optimum", 0.0, torch.from_numpy(fitted.spectral.v.astype(np.float32)))
    )
    qrows = torch.tensor([q.row for q in data.queries])
    ref_scores = similarity(fitted.final.v, qrows, cfg.metric).numpy()
    key = at_k("mean_jaccard", cfg.top_k)
    rows = []
    for name, lr, status, gap, v in candidates:
        scores = similarity(v, qrows, cfg.metric).numpy()
        row: dict[str, object] = {"optimizer": name, "lr": lr, "status": status, "gap_%": 100 * gap}
        jac, rho = [], []
        for qi, q in enumerate(data.queries):
            mine = [int(i) for i in similar_items(v, q.row, cfg.top_k, data.eligible, cfg.metric)[0]]
            jac.append(jaccard(mine, top_lists[q.text]))
            rho.append(rank_correlation(scores[qi], ref_scores[qi], sorted(set(mine) | set(top_lists[q.text]))))
            row[f"jaccard[{q.text}]"] = jac[-1]
        row[key] = float(np.mean(jac))
        row["mean_rank_corr"] = float(np.mean(rho))
        rows.append(row)
    stab = pd.DataFrame(rows)
    conv, nonconv = stab[stab["status"] == "converged"], stab[stab["status"] == "not converged"]
    result = Stability(
        converged_runs=len(conv),
        converged_mean_jaccard=float(conv[key].mean()) if len(conv) else None,
        converged_min_jaccard=float(conv[key].min()) if len(conv) else None,
        converged_mean_rank_corr=float(conv["mean_rank_corr"].mean()) if len(conv) else None,
        not_converged_runs=len(nonconv),
        not_converged_mean_jaccard=float(nonconv[key].mean()) if len(nonconv) else None,
        spectral_jaccard=float(stab.loc[stab["optimizer"] == "spectral", key].iat[0]),
        diverged_runs=int((fitted.table["status"] == "diverged").sum()),
    )
    return Output(results=(result,), tables={"stability": Table(stab)})


def step_map(cfg: MoviesConfig, data: Prepared, fitted: Fitted, top_lists: dict[str, list[int]]) -> Output:
    """A 2-D map of the most-liked eligible movies in the embedding's cosine geometry (t-SNE or PCA)."""
    eligible = data.eligible
    if int(eligible.sum()) > cfg.map_max_movies:  # t-SNE's cost: keep the most-liked ones
        keep = np.argsort(-np.where(eligible.numpy(), data.co.like_counts, -1), kind="stable")[: cfg.map_max_movies]
        eligible = torch.zeros_like(eligible)
        eligible[torch.from_numpy(keep)] = True
    log(f"[map] 2-D {cfg.map_method} map of {int(eligible.sum())} movies")
    keep = np.flatnonzero(eligible.numpy())
    coords = map_coordinates(fitted.final.v[keep], cfg.map_method, cfg.seed)
    coords_table = pd.DataFrame(
        {
            "movieId": data.items["movieId"].iloc[keep].to_numpy(),
            "x": coords[:, 0],
            "y": coords[:, 1],
            "genre": most_specific_genre(data.items["genres"].iloc[keep]),
        }
    )
    return Output(
        owner=MoviesRun,
        artefacts={"map_coords.csv": coords_table},
        figures={"embedding_map": _embedding_map(coords, keep, data.items, data.queries, top_lists, cfg.map_method)},
    )


def map_coordinates(v: torch.Tensor, method: str, seed: int) -> np.ndarray:
    """2-D coordinates of the rows of ``v`` in the cosine geometry (t-SNE or PCA of the unit vectors), for any number
    of rows from 2 (t-SNE's perplexity stays below it) and any dimension (a 1-D embedding is its own first axis)."""
    vn = torch.nn.functional.normalize(v, dim=1).numpy()
    if vn.shape[1] < 2:
        return np.column_stack([vn[:, 0], np.zeros(len(vn))])
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(2.0, (len(vn) - 1) / 3), len(vn) - 1)
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(vn)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(vn)


def _embedding_map(
    coords: np.ndarray,
    keep: np.ndarray,
    items: pd.DataFrame,
    queries: list[Query],
    top_lists: dict[str, list[int]],
    method: str,
):
    pos = {int(g): i for i, g in enumerate(keep)}
    main_genre = most_specific_genre(items["genres"].iloc[keep])
    labels = [str(t) for t in items["title"].iloc[keep]]
    highlights = {
        q.title: (pos[q.row], [pos[i] for i in top_lists[q.text] if i in pos]) for q in queries if q.row in pos
    }
    title = (
        f"{method.upper()} map of the {len(keep)} movies with >= {int(items['likes'].iloc[keep].min())} likes (cosine"
        " geometry), coloured by most specific genre"
    )
    return figures.embedding_map(coords, main_genre, highlights, labels, title)
