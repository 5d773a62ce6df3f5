"""The movie-embedding study end to end: load -> L -> sweep -> recommend -> evaluate -> render.

One function per step (2A data, 2B fit, 2C recommendations, stability, held-out check, map,
dimension sweep); each writes its tables, figures and headline numbers into the run folder as
soon as it finishes, so a failure later on never loses what was already computed. X is never
formed: the fit works on L (``objective.CoLikeOperator``). Under torchrun every rank runs the
same steps in lockstep on its share of the users; only rank 0's run folder is kept.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits
from embedlab.logs import Progress

from embedlab.errors import InputError
from embedlab.config import MoviesConfig, to_dict
from embedlab.data import available_memory, download_url, ensure_movielens, movielens_digests, resolve_data_dir, verify_movielens
from embedlab.distributed import balanced_rows, current
from embedlab.movies import figures
from embedlab.movies.cooccurrence import CoLikes, ColikeSummary, build_colikes, colike_fro_sq, colike_stats, colike_summary
from embedlab.movies.anchors import Tuned, als_candidates, ease_candidates, implicit_available, tune
from embedlab.movies.evaluate import (Scorer, bucket_masks, build_queries, colike_scorers, cosine_scorer, recommend_all, recommend_all_multi,
                                      score_recs, split_users)
from embedlab.movies.movielens import NO_GENRES, TitleIndex, TitleLookupError, load_movies, load_ratings, slug, untitled, with_years
from embedlab.movies.objective import CoLikeOperator, SpectralSolution, spectral_optimum
from embedlab.movies.recommend import eligible_items, jaccard, rank_correlation, similar_items, similarity
from embedlab.movies.train import Budget, Objective, RunResult, best_run, default_workers, fit, go_on, initial_embedding, parallel_map, sweep
from embedlab.files import npz_bytes
from embedlab.runs import RunDir
from embedlab.results import (Candidate, ColdStart, DataStats, DimChoice, FitSummary, Holdout, MoviesRun, Recommendations, RunResults,
                              Stability, load, save)

log = logging.getLogger(__name__).info
warn = logging.getLogger(__name__).warning


def item_table(co: CoLikes, movies: pd.DataFrame) -> pd.DataFrame:
    """One row per movie of X, in X's order: movieId, title, year, genres, likes."""
    items = pd.DataFrame({"movieId": co.movie_ids, "likes": co.like_counts})
    items = items.merge(movies, on="movieId", how="left", validate="one_to_one")
    items["title"] = items["title"].fillna(items["movieId"].map(untitled))
    items["genres"] = items["genres"].fillna(NO_GENRES)
    return items[["movieId", "title", "year", "genres", "likes"]]


def genre_matrix(genres: pd.Series) -> torch.Tensor:
    """(M, G) bool multi-hot of the '|'-separated genres."""
    dummies = genres.str.get_dummies(sep="|")
    dummies = dummies.drop(columns=[NO_GENRES], errors="ignore")
    return torch.from_numpy(dummies.to_numpy().astype(bool))


@dataclass
class Query:
    """A query title resolved to its movie and its row of X."""

    text: str
    movie_id: int
    row: int
    title: str


def resolve_queries(texts: list[str], index: TitleIndex, co: CoLikes, items: pd.DataFrame) -> list[Query]:
    """Titles -> rows of X, failing before any fitting when a title is unknown or unliked."""
    out = []
    for text in texts:
        movie_id = index.lookup(text)
        row = co.index_of(movie_id)
        if row is None:
            raise TitleLookupError(f"{text!r} is in the catalogue but nobody liked it at >= {co.threshold} stars, so it has no embedding", [])
        out.append(Query(text=text, movie_id=movie_id, row=row, title=str(items["title"].iat[row])))
    return out


def recommendation_table(v: torch.Tensor, row: int, items: pd.DataFrame, eligible: torch.Tensor, k: int,
                         metric: str) -> tuple[pd.DataFrame, list[int]]:
    """Top-k table for one query (rank, title, year, genres, similarity, likers) and the rows of ``items`` it lists."""
    idx, scores = similar_items(v, row, k, eligible, metric)
    return _top_table(items, idx, scores), [int(i) for i in idx]


def _top_table(items: pd.DataFrame, idx: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    df = items.iloc[idx][["title", "year", "genres", "likes"]].reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df.insert(4, "similarity", np.round(scores.astype(float), 4))
    return df.rename(columns={"likes": "likers"})


def _progress_bar(total: int, enabled: bool = True) -> tuple[Progress, Callable[[str, float], Callable[[int, float], None]]]:
    bar = Progress(total, "sweep", "it", enabled=enabled, dynamic_ncols=True, mininterval=0.5)

    def factory(name: str, lr: float) -> Callable[[int, float], None]:
        bar.set_postfix_str(f"{name} lr={lr:g}")

        def step(it: int, loss: float) -> None:
            if it > 0:
                bar.update(1)

        return step

    return bar, factory


def _status(r: RunResult, c_star: float, tol: float) -> str:
    if r.diverged:
        return "diverged"
    return "converged" if (r.final_loss - c_star) / c_star <= tol else "not converged"


def _gap(r: RunResult, c_star: float) -> float:
    return (r.final_loss - c_star) / c_star if not r.diverged else float("nan")


def make_operator(likes: sp.csr_matrix, fro_sq: float | None = None) -> CoLikeOperator:
    """X as L^T L - diag(n) on this rank's users (balanced by likes); counts and ||X||_F^2 of all users."""
    dist = current()
    likes = sp.csr_matrix(likes)
    counts = np.asarray(likes.sum(axis=0)).ravel()
    fro = colike_fro_sq(likes) if fro_sq is None else fro_sq
    rows = balanced_rows(np.diff(likes.indptr), dist.world, dist.rank)
    return CoLikeOperator.from_likes(likes[rows], fro, counts=counts, all_reduce=dist.all_reduce_sum if dist.active else None)


@dataclass
class Prepared:
    """What 2A produces: the tables, L, the item table, the resolved queries and X's summary."""

    ratings: pd.DataFrame
    movies: pd.DataFrame
    co: CoLikes
    items: pd.DataFrame
    queries: list[Query]
    summary: ColikeSummary
    source: str


@dataclass
class Fitted:
    """What 2B produces: every run of the sweep, the best one, the final embedding and the spectral reference.

    ``final`` is the best setting run to convergence: the sweep compares optimisers on an equal budget,
    the recommendations use the converged embedding (the last 0.1 % of the cost is in the small
    eigen-directions that separate rarely liked movies).
    """

    results: list[RunResult]
    best: RunResult
    final: RunResult
    spectral: SpectralSolution
    table: pd.DataFrame


def load_tables(cfg: MoviesConfig) -> tuple[pd.DataFrame, pd.DataFrame, str, dict[str, str]]:
    """(ratings, movies, description, each file's sha256): a MovieLens release from disk, or a synthetic one of a named
    shape (no files)."""
    if cfg.synthetic:
        from embedlab.movies.synthetic import check_fits, generate

        shape = check_fits(cfg.synthetic)
        log(f"[2A] generating synthetic {cfg.synthetic}: {shape[0]:,} users, {shape[1]:,} movies, {shape[2]:,} ratings (seed {cfg.seed})")
        syn = generate(cfg.synthetic, seed=cfg.seed)
        return syn.ratings, with_years(syn.movies), f"synthetic {cfg.synthetic} (seed {cfg.seed})", {}
    folder = ensure_movielens(resolve_data_dir(cfg.data_dir), None if cfg.offline else download_url, cfg.dataset)
    digests = movielens_digests(folder)
    check = verify_movielens(folder, cfg.dataset, cfg.allow_modified_data, digests)
    log(f"[2A] reading {folder}: {check}")
    return load_ratings(folder), load_movies(folder), f"{cfg.dataset} ({folder}); {check}", digests


def check_same_data(cfg: MoviesConfig, run: RunDir) -> None:
    """A resumed run goes on with the data it started on: the files' sha256 recorded by its 2A must match those under
    ``cfg.data_dir`` now (the same files in another folder are fine). Checked before the run folder is touched."""
    data = load(run).movies_data
    recorded = data.files_sha256 if data is not None else {}
    if not recorded or cfg.synthetic:
        return
    folder = resolve_data_dir(cfg.data_dir) / cfg.dataset
    if not all((folder / name).is_file() for name in recorded):
        return  # missing files: ensure_movielens says which, in its own words
    now = movielens_digests(folder)
    changed = [name for name, digest in recorded.items() if now.get(name) != digest]
    if changed:
        raise InputError(f"{run.path} was computed on other data: {', '.join(str(folder / n) for n in changed)} differ(s) from the "
                         f"file(s) it read (sha256 {', '.join(recorded[n][:12] + '…' for n in changed)}); resume it with the data it "
                         "started on (any folder holding the same files), or start a new run")


def query_texts(cfg: MoviesConfig, co: CoLikes, items: pd.DataFrame) -> list[str]:
    """The configured queries; a synthetic catalogue has no Apollo 13, so there the three most-liked movies."""
    if cfg.synthetic and cfg.queries == MoviesConfig().queries:
        return [str(items["title"].iat[i]) for i in np.argsort(-co.like_counts, kind="stable")[:3]]
    return list(cfg.queries)


def memory_estimate(cfg: MoviesConfig, n_movies: int, workers: int) -> int:
    """Peak bytes of the study's largest arrays for the sizes in ``cfg``, an upper estimate.

    Per sweep worker V, its gradient, two optimiser states and two products (M x d, float32); the Lanczos
    basis of the spectral reference (M x 2d+1, float64, and a copy); EASE's dense Gram matrix, its inverse and
    weights (M x M, float64) when it runs; the held-out top-k lists (queries x k: indices, scores, hits).
    """
    d = max([cfg.dim, *cfg.dim_sweep])
    sweep = workers * 6 * n_movies * d * 4
    spectral = 2 * n_movies * (2 * d + 1) * 8
    ease = 3 * n_movies**2 * 8 if "ease" in cfg.anchors and n_movies <= cfg.ease_max_items else 0
    holdout = 4 * cfg.holdout_max_queries * cfg.top_k * 8
    return 1024**3 + sweep + spectral + ease + holdout


def check_sizes(cfg: MoviesConfig, co: CoLikes, available: int | None = None) -> None:
    """Sizes the user set that this data cannot support, refused once X's shape is known, before any fitting."""
    m = len(co.movie_ids)
    problems = [f"{flag} {d} is not below the number of movies with a like (M = {m:,}); the embedding and its spectral "
                f"reference need d < M" for flag, d in (("--dim", cfg.dim), ("--dim-sweep", max(cfg.dim_sweep, default=0))) if d >= m]
    eligible = int((co.like_counts >= cfg.min_likes).sum())
    if eligible < 2:
        problems.append(f"--min-likes {cfg.min_likes}: {eligible} movie(s) have that many likes (the most-liked has "
                        f"{int(co.like_counts.max(initial=0)):,}), so nothing can be recommended; lower --min-likes")
    if problems:
        raise InputError("; ".join(problems))
    need, have = memory_estimate(cfg, m, default_workers()), available_memory() if available is None else available
    if need > have:
        raise InputError(f"these sizes (d = {max([cfg.dim, *cfg.dim_sweep])}, top {cfg.top_k}, M = {m:,} movies) need about "
                         f"{need / 1024**3:.1f} GiB of memory but {have / 1024**3:.1f} GiB are available; lower --dim, --dim-sweep or "
                         "--top, or raise --min-likes / --like-threshold")


def step_2a_data(cfg: MoviesConfig, run: RunDir) -> Prepared:
    """2A: ratings -> likes L -> what the report shows of X (computed in chunks, never whole)."""
    dist = current()
    ratings, movies, source, digests = load_tables(cfg)
    t0 = time.perf_counter()
    co = build_colikes(ratings, cfg.like_threshold)
    build_s = time.perf_counter() - t0
    check_sizes(cfg, co)
    dist.check_same("likes matrix", co.likes.indptr.tobytes() + co.likes.indices.tobytes())
    items = item_table(co, movies)
    unlisted = np.setdiff1d(co.movie_ids, movies["movieId"].to_numpy())
    if len(unlisted):
        warn(f"{len(unlisted):,} liked movie(s) are not in movies.csv (movieId {', '.join(map(str, unlisted[:5]))}"
             f"{', …' if len(unlisted) > 5 else ''}); kept, titled as {untitled(int(unlisted[0]))!r}")
    queries = resolve_queries(query_texts(cfg, co, items), TitleIndex.with_likes(movies, co.movie_ids, co.like_counts), co, items)
    t0 = time.perf_counter()
    summary = colike_summary(co.likes, k=15, part=training_users(cfg, ratings, co))
    stats = colike_stats(ratings, len(movies), co, summary)
    result = DataStats(**stats, source=source, build_seconds=round(build_s, 3), x_summary_seconds=round(time.perf_counter() - t0, 2),
                       query_likes={q.title: int(items["likes"].iat[q.row]) for q in queries}, files_sha256=digests)
    pairs = pd.DataFrame([(items["title"].iat[i], items["title"].iat[j], c) for i, j, c in summary.top_pairs],
                         columns=["movie A", "movie B", "users who liked both"])
    run.save_table("colike_top_pairs", pairs)
    run.save_table("query_likes", pd.DataFrame({"query": [q.text for q in queries], "title": [q.title for q in queries],
                                                 "likers": [int(items["likes"].iat[q.row]) for q in queries]}))
    run.save_csv("items.csv", items)
    run.save_csv("catalogue.csv", movies[["movieId", "title"]])  # so `recommend` can tell "unknown" from "unliked"
    save(run, result)
    log(f"[2A] {result.users:,} users, {result.likes:,} likes, M = {result.movies_with_likes:,} movies; "
        f"X (never formed): nnz {result.x_nnz:,}, max {result.x_max}")
    return Prepared(ratings, movies, co, items, queries, summary, source)


def step_2b_fit(cfg: MoviesConfig, run: RunDir, data: Prepared) -> Fitted:
    """2B: the spectral reference and the optimiser x learning-rate sweep, all on the factored operator."""
    dist = current()
    op = make_operator(data.co.likes, data.summary.fro_sq)
    v0 = initial_embedding(data.co.n_movies, cfg.dim, cfg.seed, cfg.init_scale)
    log(f"[2B] spectral reference optimum, d={cfg.dim}")
    t0 = time.perf_counter()
    spec = spectral_optimum(op, cfg.dim, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
    spec_s = time.perf_counter() - t0
    c_star = spec.cost
    n_runs = sum(len(v) for v in cfg.grid.values())
    log(f"[2B] sweep: {n_runs} runs x {cfg.iterations} iterations")
    bar, factory = _progress_bar(n_runs * cfg.iterations, dist.is_main)

    leader: list[RunResult] = []  # the best run so far: with the converged ones, the only states final_fit may go on from

    def finish(r: RunResult) -> None:
        if not r.diverged and (not leader or r.final_loss < leader[0].final_loss):
            if leader and _status(leader[0], c_star, cfg.converged_gap) != "converged":
                leader[0].state = None
            leader[:] = [r]
        elif _status(r, c_star, cfg.converged_gap) != "converged":
            r.state = None
        bar.update(cfg.iterations - max(r.iterations, 0) if r.diverged else 0)
        gap = f"gap {100 * _gap(r, c_star):.3g} %" if not r.diverged else f"diverged at iteration {r.iterations}"
        bar.write(f"  {r.optimizer:<8} lr={r.lr:<8g} {gap}  ({r.seconds:.1f} s)")

    t0 = time.perf_counter()
    results = sweep(Objective(op, op.fro_sq), v0, cfg.grid, Budget(cfg.iterations, cfg.divergence_factor), on_run=finish, progress_factory=factory,
                    workers=_workers())
    sweep_s = time.perf_counter() - t0
    bar.close()
    table = _save_sweep(run, results, c_star, cfg.converged_gap)
    best = best_run(results)
    final, finals = final_fit(cfg, op, results, c_star, _workers())
    for r in results:
        r.state = None
    best_per_opt = [best_run([r for r in results if r.optimizer == name]) for name in cfg.grid
                    if any(not r.diverged for r in results if r.optimizer == name)]
    run.save_figure("loss_by_optimizer", figures.loss_curves_by_optimizer(results, c_star, op.fro_sq))
    run.save_figure("loss_best_runs", figures.best_runs_together(best_per_opt, c_star, op.fro_sq))
    run.save_table("spectral_rounds", pd.DataFrame({"round": np.arange(1, len(spec.history) + 1), "cost": spec.history}))
    run.save_artefact("embeddings.npz", npz_bytes(v=final.v.numpy(), v_sweep_best=best.v.numpy(), v_spectral=spec.v.astype(np.float32),
                        movie_ids=data.co.movie_ids, like_counts=data.co.like_counts))
    save(run, FitSummary(
        **_fit_metrics(cfg, results, best, final, finals, spec, op.fro_sq), spectral_seconds=round(spec_s, 2),
        sweep_seconds=round(sweep_s, 1), runs_diverged=int((table["status"] == "diverged").sum()),
        runs_converged=int((table["status"] == "converged").sum()), processes=dist.world,
    ))
    log(f"[2B] best: {best.optimizer} lr={best.lr:g}, cost {best.final_loss:.6g}, gap to spectral optimum "
        f"{100 * _gap(best, c_star):.3f} % ({sweep_s:.1f} s); run to convergence: {final.optimizer} lr={final.lr:g}, "
        f"{final.iterations} iterations, {100 * _gap(final, c_star):.4f} % above")
    return Fitted(results, best, final, spec, table)


def _save_sweep(run: RunDir, results: list[RunResult], c_star: float, converged_gap: float) -> pd.DataFrame:
    """2B's sweep table and every run's loss history (what the loss figures and the report are drawn from)."""
    table = pd.DataFrame([{"optimizer": r.optimizer, "lr": r.lr, "status": _status(r, c_star, converged_gap),
                           "iterations": r.iterations, "final_cost": r.final_loss, "gap_to_optimum_%": 100 * _gap(r, c_star),
                           "seconds": round(r.seconds, 2)} for r in results])
    run.save_table("sweep", table)
    run.save_csv("loss_histories.csv", pd.concat([pd.DataFrame({"optimizer": r.optimizer, "lr": r.lr, "iteration": np.arange(len(r.losses)),
                                                               "cost": r.losses}) for r in results]))
    return table


def _fit_metrics(cfg: MoviesConfig, results: list[RunResult], best: RunResult, final: RunResult, finals: list[RunResult],
                 spec: SpectralSolution, fro_sq: float) -> dict[str, object]:
    c_star = spec.cost
    return {
        "dim": cfg.dim, "iterations": cfg.iterations, "cost_at_zero": fro_sq, "cost_at_init": results[0].losses[0],
        "spectral_cost": c_star, "spectral_rounds": len(spec.history), "spectral_converged": spec.converged,
        "spectral_relative_cost": c_star / fro_sq,
        "best_optimizer": best.optimizer, "best_lr": best.lr, "best_cost": best.final_loss,
        "best_gap_to_optimum": _gap(best, c_star), "runs": len(results),
        "final_optimizer": final.optimizer, "final_lr": final.lr, "final_iterations": final.iterations,
        "final_gap_to_optimum": _gap(final, c_star), "final_seconds": round(final.seconds, 1),
        "final_candidates": [Candidate(r.optimizer, r.lr, r.iterations, _gap(r, c_star)) for r in finals],
        "seconds_per_iteration": float(sum(r.seconds for r in results) / max(1, sum(r.iterations + 1 for r in results))),
    }


def step_2c_recommend(cfg: MoviesConfig, run: RunDir, data: Prepared, fitted: Fitted) -> tuple[Recommendations, dict[str, list[int]]]:
    """2C: the top-k tables of the queries, by the configured metric and by the other one; the result and the lists
    (rows of X, by query as typed)."""
    eligible = eligible_items(data.co.like_counts, cfg.min_likes)
    other = "dot" if cfg.metric == "cosine" else "cosine"
    top_lists: dict[str, list[int]] = {}
    top: dict[str, list[str]] = {}
    mean_likers: dict[str, dict[str, float]] = {cfg.metric: {}, other: {}}
    for q in data.queries:
        table, top_lists[q.text] = recommendation_table(fitted.final.v, q.row, data.items, eligible, cfg.top_k, cfg.metric)
        alt, _ = recommendation_table(fitted.final.v, q.row, data.items, eligible, cfg.top_k, other)
        run.save_table(f"recs_{slug(q.text)}", table)
        run.save_table(f"recs_{other}_{slug(q.text)}", alt)
        top[q.title] = list(table["title"])
        mean_likers[cfg.metric][q.title] = float(table["likers"].mean())
        mean_likers[other][q.title] = float(alt["likers"].mean())
    result = Recommendations(metric=cfg.metric, min_likes=cfg.min_likes, eligible_movies=int(eligible.sum()),
                             query_titles={q.text: q.title for q in data.queries}, top=top, mean_likers=mean_likers)
    save(run, result)
    log("[2C] top-10 for " + ", ".join(q.title for q in data.queries))
    return result, top_lists


def step_stability(cfg: MoviesConfig, run: RunDir, data: Prepared, fitted: Fitted, top_lists: dict[str, list[int]]) -> Stability:
    """2C, second half: does each run (and the spectral optimum) recommend what the best run does?"""
    c_star = fitted.spectral.cost
    eligible = eligible_items(data.co.like_counts, cfg.min_likes)
    candidates: list[tuple[str, float, str, float, torch.Tensor]] = [
        (r.optimizer, r.lr, _status(r, c_star, cfg.converged_gap), _gap(r, c_star), r.v)
        for r in fitted.results if not r.diverged and torch.isfinite(r.v).all()
    ]
    candidates.append(("spectral", float("nan"), "optimum", 0.0, torch.from_numpy(fitted.spectral.v.astype(np.float32))))
    qrows = torch.tensor([q.row for q in data.queries])
    ref_scores = similarity(fitted.final.v, qrows, cfg.metric).numpy()
    key = f"mean_jaccard@{cfg.top_k}"
    rows = []
    for name, lr, status, gap, v in candidates:
        scores = similarity(v, qrows, cfg.metric).numpy()
        row: dict[str, object] = {"optimizer": name, "lr": lr, "status": status, "gap_%": 100 * gap}
        jac, rho = [], []
        for qi, q in enumerate(data.queries):
            mine = [int(i) for i in similar_items(v, q.row, cfg.top_k, eligible, cfg.metric)[0]]
            jac.append(jaccard(mine, top_lists[q.text]))
            rho.append(rank_correlation(scores[qi], ref_scores[qi], sorted(set(mine) | set(top_lists[q.text]))))
            row[f"jaccard[{q.text}]"] = jac[-1]
        row[key] = float(np.mean(jac))
        row["mean_rank_corr"] = float(np.mean(rho))
        rows.append(row)
    stab = pd.DataFrame(rows)
    run.save_table("stability", stab, floatfmt=".3g")
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
    save(run, result)
    return result


def step_holdout(cfg: MoviesConfig, run: RunDir, data: Prepared, fitted: Fitted) -> HeldOut:
    """Held-out users: the embedding (best setting, refitted on training users) against co-count baselines,
    popularity and the field's own recommenders (EASE, ALS), overall and by the query movie's popularity.
    Returns the split and its operator, which the dimension sweep scores on too."""
    log("[eval] held-out users: embeddings vs co-likes, popularity, EASE and ALS, overall and by the query movie's like count")
    split = HoldoutSplit.make(cfg, data.ratings, data.movies, data.co)
    held = HeldOut(split, make_operator(split.train.likes, data.summary.part_fro_sq))  # ||X_train||_F^2 from 2A's pass
    refit = _fit_final(cfg, held.op, cfg.dim, fitted.final.optimizer, fitted.final.lr)
    tuned, notes = tuned_anchors(cfg, split)
    overall, cold = holdout_tables(cfg, split, refit.v if not refit.diverged else None, {t.name: t.scorer for t in tuned})
    run.save_table("holdout", overall)
    run.save_table("cold_start", cold)
    run.save_table("anchor_tuning", pd.DataFrame([{"method": t.name, "setting": s, f"validation recall@{cfg.top_k}": r, "chosen": s == t.setting}
                                                  for t in tuned for s, r in t.validation.items()]))
    save(run, Holdout(refit_status=refit.status, queries_total=split.queries_total, anchor_notes=notes,
                      methods={r["method"]: {k: r[k] for k in overall.columns if k != "method"} for r in overall.to_dict("records")}))
    buckets: dict[str, dict[str, dict[str, float | None]]] = {}
    for r in cold.to_dict("records"):
        buckets.setdefault(r["query likes"], {})[r["method"]] = {k: r[k] for k in cold.columns if k not in ("method", "query likes")}
    save(run, ColdStart(buckets))
    return held


def tuned_anchors(cfg: MoviesConfig, split: HoldoutSplit) -> tuple[list[Tuned], list[str]]:
    """EASE and ALS, each tuned on a validation slice of the training users and refitted on all of them; why any is missing."""
    fit_rows, val_rows = split_users(np.arange(split.train.likes.shape[0]), cfg.anchor_validation_fraction, cfg.holdout_seed + 1)
    fit_likes, val_queries = split.train.likes[fit_rows], build_queries(split.train.likes[val_rows]).sample(cfg.holdout_max_queries, cfg.holdout_seed)
    eligible = eligible_items(split.train.like_counts, cfg.min_likes)
    tuned, notes = [], []
    for name in cfg.anchors:
        if name == "ease" and split.train.n_movies > cfg.ease_max_items:
            notes.append(f"EASE skipped: {split.train.n_movies:,} movies > ease_max_items = {cfg.ease_max_items:,} (its dense M x M inverse)")
            continue
        if name == "als" and not implicit_available():
            notes.append("ALS skipped: the `implicit` library is not installed (pip install implicit)")
            continue
        label, candidates = (("EASE (item-item, closed form)", ease_candidates(cfg.ease_lambdas)) if name == "ease" else
                             ("ALS item factors cosine (implicit)", als_candidates(cfg.als_factors, cfg.als_regularization, cfg.als_alpha, cfg.als_iterations, cfg.seed)))
        log(f"[eval] {label}: {len(candidates)} settings on {len(val_rows)} validation users")
        t0 = time.perf_counter()
        tuned.append(tune(label, candidates, fit_likes, val_queries, cfg.top_k, eligible, split.train.likes))
        notes.append(f"{label}: {len(candidates)} settings tuned and the chosen one refitted in {time.perf_counter() - t0:.1f} s")
    return tuned, notes


def step_map(cfg: MoviesConfig, run: RunDir, data: Prepared, fitted: Fitted, top_lists: dict[str, list[int]]) -> None:
    eligible = eligible_items(data.co.like_counts, cfg.min_likes)
    if int(eligible.sum()) > cfg.map_max_movies:  # t-SNE's cost: keep the most-liked ones
        keep = np.argsort(-np.where(eligible.numpy(), data.co.like_counts, -1), kind="stable")[: cfg.map_max_movies]
        eligible = torch.zeros_like(eligible)
        eligible[torch.from_numpy(keep)] = True
    log(f"[map] 2-D {cfg.map_method} map of {int(eligible.sum())} movies")
    keep = np.flatnonzero(eligible.numpy())
    coords = map_coordinates(fitted.final.v[keep], cfg.map_method, cfg.seed)
    run.save_csv("map_coords.csv", pd.DataFrame({"movieId": data.items["movieId"].iloc[keep].to_numpy(), "x": coords[:, 0], "y": coords[:, 1],
                                                 "genre": most_specific_genre(data.items["genres"].iloc[keep])}))
    run.save_figure("embedding_map", _embedding_map(coords, keep, data.items, data.queries, top_lists, cfg.map_method))


def step_dim_sweep(cfg: MoviesConfig, run: RunDir, data: Prepared, fitted: Fitted, held: HeldOut) -> DimChoice:
    """The spectral optimum, gradient descent and held-out quality for each d of ``dim_sweep``; the d the rule picks."""
    dim_df = dimension_sweep(cfg, data, fitted, held)
    run.save_table("dim_sweep", dim_df)
    result = DimChoice(chosen_by_rule=int(choose_dim(dim_df, cfg.top_k)), configured_dim=cfg.dim)
    save(run, result)
    run.save_figure("dim_sweep", figures.dim_sweep(dim_df["dim"], dim_df["gap"], dim_df[f"hit_rate@{cfg.top_k}"], dim_df["relative_cost"]))
    return result


def run_movies(cfg: MoviesConfig, run: RunDir) -> RunResults:
    """Run the whole study into ``run``; returns the run's results (also in metrics.json).

    numpy's BLAS is held to one thread throughout: its idle threads spin after every numpy/scipy
    product and steal the cores from torch's (measured: the sweep 20 % and eigsh 7x slower).
    """
    with threadpool_limits(1, "blas"):
        return _run_movies(cfg, run)


def _run_movies(cfg: MoviesConfig, run: RunDir) -> RunResults:
    dist = current()
    cfg.validate()
    run.update_config("movies", to_dict(cfg))
    t_all = time.perf_counter()
    data = step_2a_data(cfg, run)
    fitted = step_2b_fit(cfg, run, data)
    _, top_lists = step_2c_recommend(cfg, run, data, fitted)
    step_stability(cfg, run, data, fitted, top_lists)
    held = step_holdout(cfg, run, data, fitted)
    if cfg.embedding_map and dist.is_main:  # rank 0 alone draws: the others' folders are discarded
        step_map(cfg, run, data, fitted, top_lists)
    if cfg.dim_sweep:
        step_dim_sweep(cfg, run, data, fitted, held)
    save(run, MoviesRun(total_seconds=round(time.perf_counter() - t_all, 1), processes=dist.world,
                        peak_rss_gib=round(peak_rss_bytes() / 1024**3, 2)))
    return load(run)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def map_coordinates(v: torch.Tensor, method: str, seed: int) -> np.ndarray:
    """2-D coordinates of the rows of ``v`` in the cosine geometry (t-SNE or PCA of the unit vectors)."""
    vn = torch.nn.functional.normalize(v, dim=1).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, max(2.0, (len(vn) - 1) / 3))).fit_transform(vn)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(vn)


def _embedding_map(coords: np.ndarray, keep: np.ndarray, items: pd.DataFrame, queries: list[Query],
                   top_lists: dict[str, list[int]], method: str):
    pos = {int(g): i for i, g in enumerate(keep)}
    main_genre = most_specific_genre(items["genres"].iloc[keep])
    labels = [str(t) for t in items["title"].iloc[keep]]
    highlights = {q.title: (pos[q.row], [pos[i] for i in top_lists[q.text] if i in pos]) for q in queries if q.row in pos}
    title = f"{method.upper()} map of the {len(keep)} movies with >= {int(items['likes'].iloc[keep].min())} likes (cosine geometry), coloured by most specific genre"
    return figures.embedding_map(coords, main_genre, highlights, labels, title)


def most_specific_genre(genres: pd.Series) -> np.ndarray:
    """Each movie's rarest genre among its own: MovieLens lists genres alphabetically, so the first
    listed one says little (Toy Story would be 'Adventure'); the rarest (here 'Animation' or
    'Children') is the informative colour."""
    dummies = genres.str.get_dummies(sep="|")
    freq = dummies.sum(axis=0)
    rarity = dummies.where(dummies > 0) * freq  # NaN where absent
    return rarity.idxmin(axis=1).to_numpy()


@dataclass
class HoldoutSplit:
    """Training users' likes (for the fit and the baselines) and the test users' queries."""

    train: CoLikes
    queries: object  # evaluate.Queries (a seeded sample when there are more than holdout_max_queries)
    items: pd.DataFrame
    queries_total: int

    @classmethod
    def make(cls, cfg: MoviesConfig, ratings: pd.DataFrame, movies: pd.DataFrame, co: CoLikes) -> HoldoutSplit:
        """L of the training users; the test users' likes over the same movie columns. Both are rows of 2A's L (``co``,
        all users' likes), restricted to the movies the training users liked: nothing is rebuilt from the ratings."""
        train_users, test_users = split_users(ratings["userId"].to_numpy(), cfg.holdout_fraction, cfg.holdout_seed)
        mine = np.isin(co.user_ids, train_users)
        likes = co.likes[mine]
        cols = np.flatnonzero(np.bincount(likes.indices, minlength=co.n_movies))
        if not len(cols):
            raise InputError(f"no training user of the held-out split liked a movie (rating >= {co.threshold}); lower --like-threshold")
        train = CoLikes(likes=likes[:, cols], user_ids=co.user_ids[mine], movie_ids=co.movie_ids[cols], threshold=co.threshold)
        test = co.likes[np.isin(co.user_ids, test_users)][:, cols]
        queries = build_queries(test[np.diff(test.indptr) > 0])
        return cls(train=train, queries=queries.sample(cfg.holdout_max_queries, cfg.holdout_seed), items=item_table(train, movies),
                   queries_total=len(queries.items))


def training_users(cfg: MoviesConfig, ratings: pd.DataFrame, co: CoLikes) -> np.ndarray | None:
    """Which rows of L belong to the held-out split's training users (``HoldoutSplit.make`` draws the same split), so
    that 2A's pass over X also gives ||X||_F^2 of their likes; None when the users cannot be split (the held-out step
    says why)."""
    try:
        train_users, _ = split_users(ratings["userId"].to_numpy(), cfg.holdout_fraction, cfg.holdout_seed)
    except InputError:
        return None
    return np.isin(co.user_ids, train_users)


@dataclass(frozen=True)
class HeldOut:
    """The held-out split and the co-like operator of its training users: built once, used by the held-out table and the dimension sweep."""

    split: HoldoutSplit
    op: CoLikeOperator


def _fit(cfg: MoviesConfig, op: CoLikeOperator, dim: int, optimizer: str, lr: float) -> RunResult:
    """One run of the sweep's budget from the config's seeded start (the dimension sweep)."""
    v0 = initial_embedding(op.shape[0], dim, cfg.seed, cfg.init_scale)
    return fit(Objective(op, op.fro_sq), v0, optimizer, lr, Budget(cfg.iterations, cfg.divergence_factor))


def _workers() -> int:
    """Independent runs side by side, one per core; one at a time under torch.distributed (collectives in lockstep)."""
    return 1 if current().active else default_workers()


def final_fit(cfg: MoviesConfig, op: CoLikeOperator, results: list[RunResult], c_star: float,
              workers: int = 1) -> tuple[RunResult, list[RunResult]]:
    """The embedding that recommends: every converged setting of the sweep (or the best one, if none
    converged) run again to convergence; the lowest cost wins. Ranking on the 500-step budget is not
    enough: Adam with a constant rate oscillates at a small distance from the optimum, momentum SGD
    converges to it, and the last hundredths of a per cent of the cost change held-out quality.
    A run the sweep kept the state of goes on from where the sweep left it (``go_on``): its first steps are not
    made twice."""
    converged = [r for r in results if _status(r, c_star, cfg.converged_gap) == "converged"] or [best_run(results)]
    v0 = initial_embedding(op.shape[0], cfg.dim, cfg.seed, cfg.init_scale)
    finals = list(parallel_map(lambda r: go_on(Objective(op, op.fro_sq), v0, r, _final_budget(cfg)), converged, workers))
    ok = [r for r in finals if not r.diverged]
    return (min(ok, key=lambda r: r.final_loss) if ok else best_run(results)), finals


def _fit_final(cfg: MoviesConfig, op: CoLikeOperator, dim: int, optimizer: str, lr: float) -> RunResult:
    """The chosen setting run to convergence from the same start (the embedding that recommends, and its held-out refit)."""
    v0 = initial_embedding(op.shape[0], dim, cfg.seed, cfg.init_scale)
    return fit(Objective(op, op.fro_sq), v0, optimizer, lr, _final_budget(cfg))


def _final_budget(cfg: MoviesConfig) -> Budget:
    """A run to convergence: at most ``final_iterations`` steps, stopped once the cost stalls."""
    return Budget(cfg.final_iterations, cfg.divergence_factor, rel_tol=cfg.final_rel_tol)


def holdout_tables(cfg: MoviesConfig, split: HoldoutSplit, v: torch.Tensor | None,
                   anchors: dict[str, Scorer] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(overall, by query popularity) held-out metrics of the embedding ``v`` (None: its refit diverged), the baselines and ``anchors``."""
    counts = split.train.like_counts
    eligible = eligible_items(counts, cfg.min_likes)
    genres = genre_matrix(split.items["genres"])
    popular = torch.from_numpy(counts.astype(np.float32))
    all_recs = {} if v is None else {f"embedding cosine (d={v.shape[1]})": recommend_all(cosine_scorer(v), split.queries, cfg.top_k, eligible)}
    all_recs.update(recommend_all_multi(colike_scorers(split.train.likes, counts), split.queries, cfg.top_k, eligible))
    all_recs["most popular"] = recommend_all(lambda q: popular.expand(len(q), -1), split.queries, cfg.top_k, eligible)
    all_recs.update({name: recommend_all(scorer, split.queries, cfg.top_k, eligible) for name, scorer in (anchors or {}).items()})
    masks = bucket_masks(split.queries, counts)
    overall, cold = [], []
    for name, recs in all_recs.items():
        overall.append({"method": name, **score_recs(recs, split.queries, counts, genres)})
        for bucket, mask in masks.items():
            res = score_recs(recs, split.queries, counts, genres, mask)
            cold.append({"method": name, "query likes": bucket, f"hit_rate@{cfg.top_k}": res[f"hit_rate@{cfg.top_k}"],
                         f"recall@{cfg.top_k}": res[f"recall@{cfg.top_k}"], f"mean_hits@{cfg.top_k}": res[f"mean_hits@{cfg.top_k}"], "mean_popularity": res["mean_popularity"],
                         "queries": res["queries"]})
    return pd.DataFrame(overall), pd.DataFrame(cold)


def embedding_holdout(cfg: MoviesConfig, split: HoldoutSplit, v: torch.Tensor) -> dict[str, float]:
    """The held-out metrics of the embedding ``v`` alone over every query (its row of ``holdout_tables``)."""
    counts = split.train.like_counts
    recs = recommend_all(cosine_scorer(v), split.queries, cfg.top_k, eligible_items(counts, cfg.min_likes))
    return score_recs(recs, split.queries, counts, genre_matrix(split.items["genres"]))


def lr_ladder(best_lr: float, steps: int) -> list[float]:
    """Learning rates to try at another d: the sweep's best, then 3x lower, ``steps`` times.

    A larger d adds directions with small eigenvalues and entries of V; the step that suits d = 32
    can overshoot them, so every d gets the largest rate of the ladder that converges."""
    return [best_lr / 3**i for i in range(steps + 1)]


def converged_fit(cfg: MoviesConfig, op: CoLikeOperator, dim: int, settings: list[tuple[str, float]], c_star: float) -> tuple[RunResult, list[str]]:
    """Try ``settings`` (optimiser, lr) in order and stop at the first run that converges; the best run and what each did."""
    tried: list[str] = []
    best: RunResult | None = None
    r: RunResult | None = None
    for optimizer, lr in settings:
        r = _fit(cfg, op, dim, optimizer, lr)
        tried.append(f"{optimizer} {lr:.3g}: " + ("diverged" if r.diverged else f"{100 * _gap(r, c_star):.2g} %"))
        if not r.diverged and (best is None or r.final_loss < best.final_loss):
            best = r
        if not r.diverged and _gap(r, c_star) <= cfg.converged_gap:
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


def dimension_sweep(cfg: MoviesConfig, data: Prepared, fitted: Fitted, held: HeldOut) -> pd.DataFrame:
    """For each d: the spectral optimum, gradient descent's gap to it (the best settings of the sweep,
    learning rates lowered until a run converges) and the held-out HitRate@k of the spectral
    embedding fitted on the training users."""
    op = make_operator(data.co.likes, data.summary.fro_sq)
    op_train = held.op
    settings = dim_settings(fitted, cfg.dim_sweep_lr_steps)
    rows = []
    for d in cfg.dim_sweep:
        if not 1 <= d < min(op.shape[0], op_train.shape[0]):
            raise InputError(f"--dim-sweep value {d} must be between 1 and {min(op.shape[0], op_train.shape[0]) - 1} "
                             "(the number of liked movies)")
        log(f"[dims] d={d}")
        t0 = time.perf_counter()
        spec = spectral_optimum(op, d, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
        gd, tried = converged_fit(cfg, op, d, settings, spec.cost)
        spec_train = spectral_optimum(op_train, d, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
        hold = embedding_holdout(cfg, held.split, torch.from_numpy(spec_train.v.astype(np.float32)))
        rows.append({"dim": d, "spectral_cost": spec.cost, "relative_cost": spec.cost / op.fro_sq,
                     "gap": _gap(gd, spec.cost), "status": _status(gd, spec.cost, cfg.converged_gap),
                     "optimizer": gd.optimizer, "lr": gd.lr, "tried": "; ".join(tried),
                     f"hit_rate@{cfg.top_k}": hold[f"hit_rate@{cfg.top_k}"], f"mean_hits@{cfg.top_k}": hold[f"mean_hits@{cfg.top_k}"],
                     "seconds": round(time.perf_counter() - t0, 1)})
    return pd.DataFrame(rows)


def choose_dim(dim_df: pd.DataFrame, k: int, tolerance: float = 0.005) -> int:
    """The smallest d whose held-out HitRate@k is within ``tolerance`` of the best d's: quality first, then size."""
    col = f"hit_rate@{k}"
    best = dim_df[col].max()
    return int(dim_df.loc[dim_df[col] >= best - tolerance, "dim"].min())
