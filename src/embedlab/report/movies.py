"""The Markdown section of the movie study, written from metrics.json and tables/*.md."""

from __future__ import annotations

import pandas as pd

from embedlab.report.common import figure as _fig
from embedlab.report.common import table as _table
from embedlab.report.explorer import PLACEHOLDER
from embedlab.runs import RunDir, markdown_table, md_text


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def movies_section(run: RunDir) -> str:
    """Part 2 A/B/C plus the held-out evaluation, with every number read from the run: one function per step."""
    m = run.read_json("metrics.json")
    cfg = run.config("movies")
    out: list[str] = ["## Part 2 — movie embeddings from MovieLens co-likes", ""]
    for section in (section_2a, section_2b, section_2c, section_stability, section_holdout, section_map_and_dims):
        out += section(run, m, cfg)
    return "\n".join(out)


def section_2a(run: RunDir, m: dict, cfg: dict) -> list[str]:
    """2A: the data-prep workflow and what it found of X."""
    d = m.get("movies_data", {})
    out: list[str] = []
    out += ["### 2A — building X from the data", "",
            "Workflow (pandas + scipy.sparse, no Python loop over users):", "",
            "1. Read `ratings.csv` (userId, movieId, rating) and `movies.csv` (movieId, title, genres); check the columns.",
            f"2. A *like* is a rating ≥ {cfg['like_threshold']} stars. 4.0 keeps only 4, 4.5 and 5-star ratings — a clear "
            "positive signal on MovieLens' 0.5–5 scale, where 3–3.5 is the average rating; `--like-threshold 3.5` is the looser choice.",
            "3. Encode users and liked movies as pandas categoricals and build the sparse user × movie matrix L (1 = liked).",
            "4. X = LᵀL counts, for every pair of movies, the users who liked both; its diagonal (each movie's own like count n_i) is "
            "removed, because the cost ignores i = j: X = LᵀL − diag(n). X is never stored whole (it grows with the square of the "
            "catalogue: about 10⁹ entries at ML-32M sizes): the fit uses it only as XV = Lᵀ(LV) − n∘V, and the numbers below "
            "(non-zeros, maximum, ‖X‖²_F, the most co-liked pairs) come from one pass over row blocks of X, each computed as "
            "L[:, block]ᵀL and dropped after use.",
            "5. Only movies with at least one like get a row: an unliked movie has an all-zero row, its optimal vector is 0 and it "
            "would only slow the fit down.", ""]
    if d:
        quantities = [("users", f"{d['users']:,}"), ("ratings", f"{d['ratings']:,}"),
                      ("movies in the catalogue / rated", f"{d['movies_in_catalogue']:,} / {d['movies_rated']:,}"),
                      (f"likes (rating ≥ {d['like_threshold']})", f"{d['likes']:,}"),
                      ("movies with ≥ 1 like (size M of X)", f"{d['movies_with_likes']:,}"),
                      ("non-zeros of X", f"{d['x_nnz']:,}"), ("density of X (off-diagonal)", f"{d['x_density']:.4f}"),
                      ("max X[i,j]", str(d["x_max"])), ("build time of L", f"{d['build_seconds']} s"),
                      ("chunked pass over X (nnz, max, ‖X‖²_F, top pairs)", f"{d.get('x_summary_seconds', '?')} s"),
                      ("data", str(d.get("source", "ml-latest-small")))]
        out += [markdown_table(pd.DataFrame(quantities, columns=["quantity", "value"])), ""]
        out += ["Like counts of the query movies:", "", _table(run, "query_likes"), "",
                "The most co-liked pairs:", "", _table(run, "colike_top_pairs"), ""]

    return out


def section_2b(run: RunDir, m: dict, cfg: dict) -> list[str]:
    """2B: the cost, the sweep, the converged fit and how to read the curves."""
    f = m.get("movies_fit", {})
    out: list[str] = []
    out += ["### 2B — minimising the cost by gradient descent", "",
            "Cost c(V) = Σ_{i≠j} (v_i·v_j − X_ij)². It is evaluated without forming the dense M × M matrix VVᵀ, and without "
            "X itself: c = ‖VᵀV‖²_F − Σ_i‖v_i‖⁴ − 2·tr(VᵀXV) + ‖X‖²_F, gradient 4·(V(VᵀV) − diag(‖v_i‖²)V − XV), with "
            "XV = Lᵀ(LV) − n∘V and ‖X‖²_F = ‖LᵀL‖²_F − Σn_i² (the Gram matrix of the cheaper side of L, in blocks). One step "
            "costs O(nnz(L)·d + M·d²) instead of O(nnz(X)·d). The gradient is handed to `torch.optim` optimisers.", ""]
    if f:
        out += [f"- dimension d = {f['dim']}, {f['iterations']} iterations per run, every run from the same seeded start "
                f"V₀ ~ N(0, {cfg['init_scale']}²) (seed {cfg['seed']}); cost at V = 0: {f['cost_at_zero']:.6g}, at V₀: {f['cost_at_init']:.6g}.",
                f"- Reference optimum: top-{f['dim']} eigenpairs of X with its diagonal refilled from the current fit, repeated until the "
                f"cost stops falling ({f['spectral_rounds']} rounds, {f['spectral_seconds']} s"
                + ("" if f.get("spectral_converged", True) else f"; **stopped at the limit of {cfg['spectral_rounds']} rounds while still "
                   "falling, so c* is an upper bound and gaps below are overstated**") +
                f"): c* = {f['spectral_cost']:.6g} ({100 * f['spectral_relative_cost']:.2f} % of ‖X‖²_F). eigsh runs on a LinearOperator "
                "whose matvec is the same factored product.",
                f"- A run is *diverged* when its cost becomes non-finite or exceeds {cfg['divergence_factor']}× its start (it is stopped "
                f"and the sweep goes on), *converged* when it ends within {100 * cfg['converged_gap']:g} % of c*.",
                f"- Best run: **{f['best_optimizer']} lr = {f['best_lr']:g}**, cost {f['best_cost']:.6g}, "
                f"**{100 * f['best_gap_to_optimum']:.3f} %** above c*. {f['runs']} runs in {f['sweep_seconds']} s "
                f"({1000 * f['seconds_per_iteration']:.1f} ms per iteration); {f['runs_converged']} converged, {f['runs_diverged']} diverged.",
                (f"- The embedding that recommends: every converged setting run again from V₀ until its lowest cost falls by less than "
                 f"{cfg.get('final_rel_tol', 0):g} (relative) over 50 iterations ("
                 + "; ".join(f"{c['optimizer']} {c['lr']:g}: {c['iterations']} iterations, {100 * c['gap']:.4f} %" for c in f.get("final_candidates", []))
                 + f"); the lowest wins: **{f.get('final_optimizer', f['best_optimizer'])} lr = {f.get('final_lr', f['best_lr']):g}, "
                 f"{100 * f['final_gap_to_optimum']:.4f} %** above c*. The sweep compares optimisers on an equal budget; Adam with a constant "
                 "rate keeps oscillating a little above the optimum while momentum SGD converges to it, and the last hundredths of a per "
                 "cent of the cost (the small eigen-directions that separate rarely liked movies) change held-out quality measurably."
                 if "final_iterations" in f else ""), "",
                _fig(run, "loss_by_optimizer", "loss per optimiser",
                     "One panel per optimiser: the largest rate that does not diverge reaches the dashed optimum line first."), "", _fig(run, "loss_best_runs", "best runs",
                     "Each optimiser at its best rate on one axis: how many iterations each needs to come within a per cent of the optimum."), "",
                _table(run, "sweep"), "",
                "Reading the curves: plain SGD's step must stay below about 2/λ_max of the Hessian (set by the largest eigenvalue of X), "
                "so the directions with small eigenvalues crawl; Nesterov momentum multiplies the effective step by ~10 at the same "
                "stability limit. Adagrad, RMSprop and Adam rescale every coordinate, so their learning rate is in units of V itself "
                "(entries of order 1 here): too small and V cannot grow to its scale in the budget; too large and the first steps "
                "overshoot and the cost explodes.", ""]

    return out


def section_2c(run: RunDir, m: dict, cfg: dict) -> list[str]:
    """2C: the strategy and the top-k tables of the queries, by both metrics."""
    r = m.get("movies_recommend", {})
    out: list[str] = []
    out += ["### 2C — recommendations", "",
            f"Strategy: **{r.get('metric', cfg['metric'])} similarity** of the fitted embeddings (the best setting run to convergence), excluding the query itself and "
            f"movies with fewer than **{cfg['min_likes']} likes** ({r.get('eligible_movies', '?')} movies remain). Rarely liked movies have "
            "near-zero vectors whose direction is mostly left over from the random start, so their cosine is noise. "
            "Cosine compares directions only; the raw dot product v_i·v_j approximates the co-like count itself, which grows with "
            "both movies' popularity, so it pushes the most-liked films onto every list (the dot-product tables below show it: "
            "compare the likers columns).", ""]
    titles = r.get("query_titles", {})
    metric = cfg["metric"]
    other = "dot" if metric == "cosine" else "cosine"
    for q in titles or cfg["queries"]:  # the queries the run used (a catalogue without the configured titles uses others)
        title = titles.get(q, q)
        mean_other = r.get(f"mean_likers_{other}[{title}]", float("nan"))
        mean_main = r.get(f"mean_likers_{metric}[{title}]", float("nan"))
        summary = f"{other} similarity, for comparison (mean likers {mean_other:.0f} vs {mean_main:.0f} with {metric})"
        out += [f"#### {md_text(title)}", "", _table(run, f"recs_{_slug(q)}"), "",
                f"<details><summary>{summary}</summary>", "", _table(run, f"recs_{other}_{_slug(q)}"), "", "</details>", ""]
    out += ["In `report.html` the explorer below searches every movie with enough likes, lists its top-"
            f"{cfg['top_k']} by either similarity, and maps the embeddings; `embedlab recommend --run <this folder> \"<title>\"` "
            "gives the same lists on the command line.", "", PLACEHOLDER, ""]
    return out


def section_stability(run: RunDir, m: dict, cfg: dict) -> list[str]:
    """2C: do recommendations change with the learning rate or the optimiser?"""
    s = m.get("movies_stability", {})
    k = cfg["top_k"]
    out: list[str] = []
    out += ["#### Do recommendations change with the learning rate or the optimiser?", ""]
    if s:
        conv = s.get("converged_runs", 0)
        answer = (f"{conv} runs converged (within {100 * cfg['converged_gap']:g} % of c*). Their top-{k} lists overlap the converged embedding's with mean "
                  f"Jaccard@{k} = {s['converged_mean_jaccard']:.2f} (lowest {s['converged_min_jaccard']:.2f}) and the scores of the "
                  f"recommended movies have mean rank correlation {s['converged_mean_rank_corr']:.2f}. " if conv else
                  "No run converged within the tolerance; ")
        if s.get("not_converged_runs"):
            answer += (f"The {s['not_converged_runs']} runs that stopped short of the optimum agree less "
                       f"(mean Jaccard@{k} = {s['not_converged_mean_jaccard']:.2f}). ")
        answer += (f"The spectral optimum itself, computed by a completely different method, gives Jaccard@{k} = {s['spectral_jaccard']:.2f}. "
                   f"{s['diverged_runs']} diverged runs give no usable embedding at all.")
        out += [answer, "",
                "Why: the cost depends on V only through VVᵀ, and VVᵀ = (VQ)(VQ)ᵀ for every orthogonal Q, so optimisers that reach the "
                "optimum may land on differently rotated V — but rotations preserve every dot product and every norm, hence every cosine, "
                "and the recommendations are the same. The optimiser and learning rate matter only through *whether and how far* the run "
                "converged: a run stopped early has fitted the large-eigenvalue directions (popularity, broad taste) but not the small ones "
                "that separate, say, family comedies from children's animation, so its lists differ; a diverged run is useless. "
                "Remaining differences among converged runs come from near-ties in similarity and from the last, nearly "
                "degenerate eigen-directions near the d-th eigenvalue.", "",
                _table(run, "stability"), ""]

    return out


def section_holdout(run: RunDir, m: dict, cfg: dict) -> list[str]:
    """Held-out users, overall and by the query movie's popularity (cold start)."""
    k = cfg["top_k"]
    out: list[str] = []
    out += ["### Beyond the assignment — held-out evaluation", "",
            f"Users are split {100 * (1 - cfg['holdout_fraction']):.0f}/{100 * cfg['holdout_fraction']:.0f} (seed {cfg['holdout_seed']}). L and "
            f"the embedding (the best optimiser setting, refitted) use the training users only. For each test user and each movie they liked, "
            f"the top-{k} for that movie is compared with the user's other liked movies. HitRate@{k}: share of such queries with at least one "
            f"hit; mean hits@{k}: how many of the {k} were liked; popularity: mean like count of what is recommended; genre overlap@{k}: "
            f"share of recommended movies that share a genre with the query; Recall@{k}: hits / min({k}, the user's other liked movies), "
            f"which, unlike HitRate@{k}, recommending only blockbusters cannot saturate. Every method uses the same candidate filter. "
            "Besides the co-count baselines, two recommenders a practitioner would reach for: **EASE** (Steck 2019: the item-item "
            "weights B = I − P/diag(P), P = (LᵀL + λI)⁻¹, that best predict each like from the user's other likes) and **ALS** item "
            "factors from the `implicit` library compared by cosine; each is tuned on a validation slice of the training users, then "
            "refitted on all of them (table below).", "",
            _table(run, "holdout"), ""]
    out += [anchor_reading(m.get("movies_holdout", {}), k), ""]
    for note in m.get("movies_holdout", {}).get("anchor_notes", []):
        out += [f"*{md_text(note)}.*", ""]
    if (run.path / "tables" / "anchor_tuning.md").exists():
        out += ["<details><summary>How EASE's λ and ALS's size were chosen (validation users)</summary>", "",
                _table(run, "anchor_tuning"), "", "</details>", ""]
    h = m.get("movies_holdout", {})
    used = next((r.get("queries") for r in h.values() if isinstance(r, dict) and "queries" in r), None)
    if used is not None and h.get("queries_total", used) > used:
        out += [f"There are {h['queries_total']:,} such queries; {used:,} of them, a seeded uniform sample (`holdout_max_queries`), "
                f"are scored, so each rate is an unbiased estimate with a standard error of at most {50 / used ** 0.5:.2f} points.", ""]
    if h.get("refit_status") == "diverged":
        out += ["**The refit of the embedding on the training users diverged, so it has no row above.**", ""]
    if (run.path / "tables" / "cold_start.md").exists():
        out += ["#### Cold start: by how often the query movie was liked", "",
                "The same queries, split by the query movie's like count among the training users (< 10, 10–100, > 100). "
                "Rarely liked movies are where item-to-item methods are weakest: their co-like rows are short and noisy.", "",
                _table(run, "cold_start"), "", cold_start_reading(m.get("movies_cold_start", {}), k), ""]
    return out


def section_map_and_dims(run: RunDir, m: dict, cfg: dict) -> list[str]:
    """The embedding map and the dimension sweep, with how the default d is chosen."""
    k = cfg["top_k"]
    out: list[str] = []
    if (run.path / "figures" / "embedding_map.png").exists():
        out += ["### Map of the embeddings", "", _fig(run, "embedding_map", "embedding map",
                     "Neighbours on the map tend to share genres; each query is a large marker, its top-10 are rings of its colour."), ""]
    if (run.path / "tables" / "dim_sweep.md").exists():
        ds = m.get("movies_dim_sweep", {})
        out += ["### Embedding dimension", "",
                "For each d: the spectral optimum (its share of ‖X‖²_F left unexplained), gradient descent's gap to it — each optimiser's "
                "best rate from the main sweep, lowered 3× at a time until a run converges, because a rate that suits one d can overshoot "
                "the smaller eigen-directions that a larger d adds — and the held-out HitRate of the optimal embedding fitted on the "
                "training users.", "", _fig(run, "dim_sweep", "dimension sweep",
                     "Left: the share of the cost left unexplained falls as d grows; right: where held-out HitRate stops improving."), "", _table(run, "dim_sweep"), ""]
        if ds:
            chosen, configured = ds.get("chosen_by_rule"), ds.get("configured_dim")
            out += [f"How the default d is chosen: by held-out quality, not run time — the smallest d whose HitRate@{k} is within 0.005 "
                    f"of the best d's. On this run that rule picks **d = {chosen}**; this run used d = {configured}"
                    + (" (the default)." if chosen == configured else " (set by the user or the profile)."), ""]
    return out




def anchor_reading(h: dict, k: int) -> str:
    """Where the assignment's embedding stands against the field's recommenders, in numbers, and why."""
    key = f"recall@{k}"
    rows = {name: r[key] for name, r in h.items() if isinstance(r, dict) and key in r}
    emb = next(((n, v) for n, v in rows.items() if n.startswith("embedding")), None)
    if emb is None or len(rows) < 2:
        return ""
    ranked = sorted(rows.items(), key=lambda kv: -kv[1])
    order = "; ".join(f"{n} {v:.3f}" for n, v in ranked)
    best_name, best = ranked[0]
    where = ("the best of all methods" if best_name == emb[0] else
             f"{100 * (best - emb[1]):.1f} points below the best, {best_name}")
    return (f"Recall@{k}, best first: {order}. The assignment's embedding is {where}. That is expected: it is a rank-d "
            "approximation of the raw co-count matrix X, whose largest entries belong to the most-liked movies, so its "
            "directions are shaped by popularity and cosine only partly removes it. EASE is fitted for exactly this task "
            "(predict a held-out like from the others), and its inverse Gram matrix discounts popular movies; ALS weights every "
            "user's likes against a full set of non-likes. Both use the same training likes (their run times are in the notes below).")


def cold_start_reading(cold: dict[str, dict[str, float]], k: int) -> str:
    """One paragraph reading the cold-start table: where each method stands per bucket."""
    if not cold:
        return ""
    key = f"hit_rate@{k}"
    buckets: dict[str, dict[str, float]] = {}
    for name, row in cold.items():
        method, _, bucket = name.partition(" | ")
        buckets.setdefault(bucket, {})[method] = row.get(key, float("nan"))
    parts, leads = [], []
    for bucket, rows in buckets.items():
        emb = next((v for m_, v in rows.items() if m_.startswith("embedding")), None)
        norm, pop = rows.get("co-likes X_ij/sqrt(n_i n_j)"), rows.get("most popular")
        if emb is None or norm is None or pop is None:
            continue
        parts.append(f"{bucket}: embedding {emb:.3f}, normalised co-likes {norm:.3f}, most popular {pop:.3f}")
        leads.append(f"{100 * (pop - emb):+.1f} points for {bucket}")
    if not parts:
        return ""
    return (f"HitRate@{k} by bucket — " + "; ".join(parts) + ". Most popular minus embedding: " + ", ".join(leads) + ". "
            "A rarely liked query movie has a short, noisy co-like row and a short embedding vector whose direction is weakly "
            "determined, so its similarity lists are least reliable; recommending what everybody likes does not depend on the query "
            "at all. As the query's like count grows the co-like signal becomes reliable, which is where the similarity methods "
            "should close the gap or lead.")
