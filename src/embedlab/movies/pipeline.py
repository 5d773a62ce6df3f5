"""The movie-embedding study end to end: load -> X -> sweep -> recommend -> evaluate -> render.

Each step writes its tables, figures and headline numbers into the run folder as soon as it
finishes, so a failure later on never loses what was already computed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from embedlab.config import MoviesConfig, to_dict
from embedlab.data import download_url, ensure_movielens, resolve_data_dir
from embedlab.movies import figures
from embedlab.movies.cooccurrence import CoLikes, build_colikes, colike_stats, like_matrix, top_pairs
from embedlab.movies.evaluate import build_queries, colike_scorer, cosine_scorer, evaluate_scorer, split_users
from embedlab.movies.movielens import TitleIndex, TitleLookupError, load_movies, load_ratings
from embedlab.movies.objective import frobenius_sq, spectral_optimum, to_torch_csr
from embedlab.movies.recommend import eligible_items, jaccard, rank_correlation, similar_items, similarity
from embedlab.movies.train import RunResult, best_run, fit, initial_embedding, sweep
from embedlab.runs import RunDir

Log = Callable[[str], None]


def slug(text: str) -> str:
    """'Apollo 13' -> 'apollo_13' (file names for per-query tables)."""
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def item_table(co: CoLikes, movies: pd.DataFrame) -> pd.DataFrame:
    """One row per movie of X, in X's order: movieId, title, year, genres, likes."""
    items = pd.DataFrame({"movieId": co.movie_ids, "likes": co.like_counts})
    items = items.merge(movies, on="movieId", how="left", validate="one_to_one")
    items["title"] = items["title"].fillna(items["movieId"].map(lambda m: f"movieId {m}"))
    items["genres"] = items["genres"].fillna("(no genres listed)")
    return items[["movieId", "title", "year", "genres", "likes"]]


def genre_matrix(genres: pd.Series) -> torch.Tensor:
    """(M, G) bool multi-hot of the '|'-separated genres."""
    dummies = genres.str.get_dummies(sep="|")
    dummies = dummies.drop(columns=["(no genres listed)"], errors="ignore")
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


def recommendation_table(v: torch.Tensor, row: int, items: pd.DataFrame, eligible: torch.Tensor, k: int, metric: str) -> pd.DataFrame:
    """Top-k table for one query: rank, title, year, genres, similarity, likers."""
    idx, scores = similar_items(v, row, k, eligible, metric)
    df = items.iloc[idx][["title", "year", "genres", "likes"]].reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df.insert(4, "similarity", np.round(scores.astype(float), 4))
    return df.rename(columns={"likes": "likers"})


def _progress_bar(total: int) -> tuple[tqdm, Callable[[str, float], Callable[[int, float], None]]]:
    bar = tqdm(total=total, desc="sweep", unit="it", dynamic_ncols=True, disable=None, mininterval=0.5)

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


def run_movies(cfg: MoviesConfig, run: RunDir, log: Log = print) -> dict[str, object]:
    """Run the whole study into ``run``; returns the headline metrics (also in metrics.json)."""
    cfg.validate()
    run.update_config("movies", to_dict(cfg))
    t_all = time.perf_counter()

    # ---- 2A: data -> L -> X ------------------------------------------------------------------
    data_dir = resolve_data_dir(cfg.data_dir)
    folder = ensure_movielens(data_dir, None if cfg.offline else download_url)
    log(f"[2A] reading {folder}")
    ratings = load_ratings(folder)
    movies = load_movies(folder)
    t0 = time.perf_counter()
    co = build_colikes(ratings, cfg.like_threshold)
    build_s = time.perf_counter() - t0
    items = item_table(co, movies)
    queries = resolve_queries(cfg.queries, TitleIndex(movies), co, items)
    stats = colike_stats(ratings, len(movies), co)
    stats["build_seconds"] = round(build_s, 3)
    for q in queries:
        stats[f"likes[{q.title}]"] = int(items["likes"].iat[q.row])
    pairs = pd.DataFrame(
        [(items["title"].iat[i], items["title"].iat[j], c) for i, j, c in top_pairs(co.x, 15)],
        columns=["movie A", "movie B", "users who liked both"],
    )
    run.save_table("colike_top_pairs", pairs)
    run.save_table("query_likes", pd.DataFrame({"query": [q.text for q in queries], "title": [q.title for q in queries],
                                                 "likers": [int(items["likes"].iat[q.row]) for q in queries]}))
    items.to_csv(run.artefact("items.csv"), index=False)
    run.update_metrics("movies_data", stats)
    log(f"[2A] {stats['users']} users, {stats['likes']} likes, X: {stats['movies_with_likes']} movies, nnz {stats['x_nnz']:,}, max {stats['x_max']}")

    # ---- 2B: sweep + spectral reference ------------------------------------------------------
    x_t = to_torch_csr(co.x)
    x_fro_sq = frobenius_sq(co.x)
    m = co.x.shape[0]
    v0 = initial_embedding(m, cfg.dim, cfg.seed, cfg.init_scale)
    log(f"[2B] spectral reference optimum, d={cfg.dim}")
    t0 = time.perf_counter()
    spec = spectral_optimum(co.x, cfg.dim, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
    spec_s = time.perf_counter() - t0
    c_star = spec.cost
    n_runs = sum(len(v) for v in cfg.grid.values())
    log(f"[2B] sweep: {n_runs} runs x {cfg.iterations} iterations")
    bar, factory = _progress_bar(n_runs * cfg.iterations)

    def finish(r: RunResult) -> None:
        bar.update(cfg.iterations - max(r.iterations, 0) if r.diverged else 0)
        gap = f"gap {100 * (r.final_loss - c_star) / c_star:.3g} %" if not r.diverged else f"diverged at iteration {r.iterations}"
        (bar.write if not bar.disable else log)(f"  {r.optimizer:<8} lr={r.lr:<8g} {gap}  ({r.seconds:.1f} s)")

    t0 = time.perf_counter()
    results = sweep(x_t, x_fro_sq, v0, cfg.grid, cfg.iterations, cfg.divergence_factor, on_run=finish, progress_factory=factory)
    sweep_s = time.perf_counter() - t0
    bar.close()
    rows = []
    for r in results:
        rows.append({
            "optimizer": r.optimizer, "lr": r.lr, "status": _status(r, c_star, cfg.converged_gap),
            "iterations": r.iterations, "final_cost": r.final_loss,
            "gap_to_optimum_%": 100 * (r.final_loss - c_star) / c_star if not r.diverged else np.nan,
            "seconds": round(r.seconds, 2),
        })
    sweep_df = pd.DataFrame(rows)
    run.save_table("sweep", sweep_df)
    pd.concat([pd.DataFrame({"optimizer": r.optimizer, "lr": r.lr, "iteration": np.arange(len(r.losses)), "cost": r.losses})
               for r in results]).to_csv(run.artefact("loss_histories.csv"), index=False)
    best = best_run(results)
    best_per_opt = [best_run([r for r in results if r.optimizer == name] or [best]) for name in cfg.grid
                    if any(not r.diverged for r in results if r.optimizer == name)]
    run.save_figure("loss_by_optimizer", figures.loss_curves_by_optimizer(results, c_star, x_fro_sq))
    run.save_figure("loss_best_runs", figures.best_runs_together(best_per_opt, c_star, x_fro_sq))
    run.save_table("spectral_rounds", pd.DataFrame({"round": np.arange(1, len(spec.history) + 1), "cost": spec.history}))
    np.savez_compressed(run.artefact("embeddings.npz"), v=best.v.numpy(), v_spectral=spec.v.astype(np.float32),
                        movie_ids=co.movie_ids, like_counts=co.like_counts)
    gap_best = (best.final_loss - c_star) / c_star
    fit_metrics = {
        "dim": cfg.dim, "iterations": cfg.iterations, "cost_at_zero": x_fro_sq, "cost_at_init": results[0].losses[0],
        "spectral_cost": c_star, "spectral_rounds": len(spec.history), "spectral_seconds": round(spec_s, 2),
        "spectral_relative_cost": c_star / x_fro_sq,
        "best_optimizer": best.optimizer, "best_lr": best.lr, "best_cost": best.final_loss,
        "best_gap_to_optimum": gap_best, "sweep_seconds": round(sweep_s, 1), "runs": len(results),
        "runs_diverged": int((sweep_df["status"] == "diverged").sum()),
        "runs_converged": int((sweep_df["status"] == "converged").sum()),
        "seconds_per_iteration": float(sum(r.seconds for r in results) / max(1, sum(r.iterations + 1 for r in results))),
    }
    run.update_metrics("movies_fit", fit_metrics)
    log(f"[2B] best: {best.optimizer} lr={best.lr:g}, cost {best.final_loss:.6g}, gap to spectral optimum {100 * gap_best:.3f} % ({sweep_s:.0f} s)")

    # ---- 2C: recommendations, strategies, stability ------------------------------------------
    eligible = eligible_items(co.like_counts, cfg.min_likes)
    rec_metrics: dict[str, object] = {"metric": cfg.metric, "min_likes": cfg.min_likes, "eligible_movies": int(eligible.sum()),
                                      "query_titles": {q.text: q.title for q in queries}}
    top_lists: dict[str, list[int]] = {}
    for q in queries:
        table = recommendation_table(best.v, q.row, items, eligible, cfg.top_k, cfg.metric)
        run.save_table(f"recs_{slug(q.text)}", table)
        other = "dot" if cfg.metric == "cosine" else "cosine"
        alt = recommendation_table(best.v, q.row, items, eligible, cfg.top_k, other)
        run.save_table(f"recs_{other}_{slug(q.text)}", alt)
        top_lists[q.text] = [int(i) for i in similar_items(best.v, q.row, cfg.top_k, eligible, cfg.metric)[0]]
        rec_metrics[f"top{cfg.top_k}[{q.title}]"] = list(table["title"])
        rec_metrics[f"mean_likers_{cfg.metric}[{q.title}]"] = float(table["likers"].mean())
        rec_metrics[f"mean_likers_{other}[{q.title}]"] = float(alt["likers"].mean())
    run.update_metrics("movies_recommend", rec_metrics)
    log("[2C] top-10 for " + ", ".join(q.title for q in queries))

    candidates: list[tuple[str, float, str, float, torch.Tensor]] = [
        (r.optimizer, r.lr, _status(r, c_star, cfg.converged_gap), (r.final_loss - c_star) / c_star, r.v)
        for r in results if not r.diverged and torch.isfinite(r.v).all()
    ]
    candidates.append(("spectral", float("nan"), "optimum", 0.0, torch.from_numpy(spec.v.astype(np.float32))))
    qrows = torch.tensor([q.row for q in queries])
    ref_scores = similarity(best.v, qrows, cfg.metric).numpy()
    stab_rows = []
    for name, lr, status, gap, v in candidates:
        scores = similarity(v, qrows, cfg.metric).numpy()
        row: dict[str, object] = {"optimizer": name, "lr": lr, "status": status, "gap_%": 100 * gap}
        jac, rho = [], []
        for qi, q in enumerate(queries):
            mine = [int(i) for i in similar_items(v, q.row, cfg.top_k, eligible, cfg.metric)[0]]
            union = sorted(set(mine) | set(top_lists[q.text]))
            jac.append(jaccard(mine, top_lists[q.text]))
            rho.append(rank_correlation(scores[qi], ref_scores[qi], union))
            row[f"jaccard[{q.text}]"] = jac[-1]
        row[f"mean_jaccard@{cfg.top_k}"] = float(np.mean(jac))
        row["mean_rank_corr"] = float(np.mean(rho))
        stab_rows.append(row)
    stab = pd.DataFrame(stab_rows)
    run.save_table("stability", stab, floatfmt=".3g")
    conv = stab[stab["status"] == "converged"]
    nonconv = stab[stab["status"] == "not converged"]
    spec_row = stab[stab["optimizer"] == "spectral"]
    run.update_metrics("movies_stability", {
        "converged_runs": len(conv),
        "converged_mean_jaccard": float(conv[f"mean_jaccard@{cfg.top_k}"].mean()) if len(conv) else None,
        "converged_min_jaccard": float(conv[f"mean_jaccard@{cfg.top_k}"].min()) if len(conv) else None,
        "converged_mean_rank_corr": float(conv["mean_rank_corr"].mean()) if len(conv) else None,
        "not_converged_runs": len(nonconv),
        "not_converged_mean_jaccard": float(nonconv[f"mean_jaccard@{cfg.top_k}"].mean()) if len(nonconv) else None,
        "spectral_jaccard": float(spec_row[f"mean_jaccard@{cfg.top_k}"].iat[0]),
        "diverged_runs": int((sweep_df["status"] == "diverged").sum()),
    })

    # ---- beyond: held-out evaluation --------------------------------------------------------
    log("[eval] held-out users: embeddings vs co-like baselines")
    hold = holdout_evaluation(cfg, ratings, movies, best.optimizer, best.lr)
    run.save_table("holdout", hold)
    run.update_metrics("movies_holdout", {f"{r['method']}": {k: r[k] for k in hold.columns if k != "method"} for r in hold.to_dict("records")})

    # ---- pictures ------------------------------------------------------------------------------
    if cfg.embedding_map:
        log(f"[map] 2-D {cfg.map_method} map of {int(eligible.sum())} movies")
        run.save_figure("embedding_map", _embedding_map(best.v, items, eligible, queries, top_lists, cfg.map_method, cfg.seed))
    if cfg.dim_sweep:
        dim_df = dimension_sweep(cfg, co, ratings, movies, best.optimizer, best.lr, log)
        run.save_table("dim_sweep", dim_df)
        run.save_figure("dim_sweep", figures.dim_sweep(dim_df["dim"], dim_df["gap"], dim_df[f"hit_rate@{cfg.top_k}"], dim_df["relative_cost"]))

    run.update_metrics("movies_run", {"total_seconds": round(time.perf_counter() - t_all, 1)})
    return run.read_json("metrics.json")


def _embedding_map(v: torch.Tensor, items: pd.DataFrame, eligible: torch.Tensor, queries: list[Query],
                   top_lists: dict[str, list[int]], method: str, seed: int):
    keep = np.flatnonzero(eligible.numpy())
    pos = {int(g): i for i, g in enumerate(keep)}
    vn = torch.nn.functional.normalize(v[keep], dim=1).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        coords = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, max(2.0, (len(keep) - 1) / 3))).fit_transform(vn)
    else:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=seed).fit_transform(vn)
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


def _split_colikes(cfg: MoviesConfig, ratings: pd.DataFrame) -> tuple[CoLikes, sp.csr_matrix]:
    """X from the training users; the test users' likes over the same movie columns."""
    train_users, test_users = split_users(ratings["userId"].to_numpy(), cfg.holdout_fraction, cfg.holdout_seed)
    train = build_colikes(ratings[ratings["userId"].isin(train_users)], cfg.like_threshold)
    test_r = ratings[ratings["userId"].isin(test_users) & ratings["movieId"].isin(train.movie_ids)]
    lmat, _, test_movies = like_matrix(test_r, cfg.like_threshold)
    cols = np.searchsorted(train.movie_ids, test_movies)
    remap = sp.csr_matrix((np.ones(len(cols), np.float32), (np.arange(len(cols)), cols)), shape=(len(cols), len(train.movie_ids)))
    return train, (lmat @ remap).tocsr()


def _fit_best(cfg: MoviesConfig, x: sp.csr_matrix, dim: int, optimizer: str, lr: float) -> RunResult:
    v0 = initial_embedding(x.shape[0], dim, cfg.seed, cfg.init_scale)
    return fit(to_torch_csr(x), frobenius_sq(x), v0, optimizer, lr, cfg.iterations, cfg.divergence_factor)


def holdout_evaluation(cfg: MoviesConfig, ratings: pd.DataFrame, movies: pd.DataFrame, optimizer: str, lr: float,
                       v_override: torch.Tensor | None = None) -> pd.DataFrame:
    """HitRate@k etc. of the embedding (best optimiser setting, refit on training users) and baselines."""
    train, test_likes = _split_colikes(cfg, ratings)
    queries = build_queries(test_likes)
    items = item_table(train, movies)
    counts = train.like_counts
    eligible = eligible_items(counts, cfg.min_likes)
    genres = genre_matrix(items["genres"])
    v = v_override if v_override is not None else _fit_best(cfg, train.x, cfg.dim, optimizer, lr).v
    popular = torch.from_numpy(counts.astype(np.float32))
    scorers = {
        f"embedding cosine (d={v.shape[1]})": cosine_scorer(v),
        "co-likes raw X_ij": colike_scorer(train.x),
        "co-likes X_ij/sqrt(n_i n_j)": colike_scorer(train.x, counts),
        "most popular": lambda q: popular.expand(len(q), -1),
    }
    rows = []
    for name, scorer in scorers.items():
        res = evaluate_scorer(scorer, queries, cfg.top_k, eligible, counts, genres)
        rows.append({"method": name, **res})
    return pd.DataFrame(rows)


def dimension_sweep(cfg: MoviesConfig, co: CoLikes, ratings: pd.DataFrame, movies: pd.DataFrame,
                    optimizer: str, lr: float, log: Log) -> pd.DataFrame:
    """For each d: spectral optimum, the best optimiser's gap to it, and held-out HitRate@k."""
    train, _ = _split_colikes(cfg, ratings)
    fro = frobenius_sq(co.x)
    rows = []
    for d in cfg.dim_sweep:
        log(f"[dims] d={d}")
        spec = spectral_optimum(co.x, d, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
        gd = _fit_best(cfg, co.x, d, optimizer, lr)
        spec_train = spectral_optimum(train.x, d, max_rounds=cfg.spectral_rounds, seed=cfg.seed)
        hold = holdout_evaluation(cfg, ratings, movies, optimizer, lr, v_override=torch.from_numpy(spec_train.v.astype(np.float32)))
        rows.append({"dim": d, "spectral_cost": spec.cost, "relative_cost": spec.cost / fro,
                     "gap": (gd.final_loss - spec.cost) / spec.cost if not gd.diverged else float("nan"), "status": gd.status,
                     f"hit_rate@{cfg.top_k}": float(hold[f"hit_rate@{cfg.top_k}"].iat[0])})
    return pd.DataFrame(rows)
