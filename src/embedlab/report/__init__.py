"""Reports rendered from a run folder's saved results only, so any finished run can be re-rendered.

``report.md`` (for GitHub) is the single source; ``report.html`` is the same text with every figure inlined. The
prose lives in ``templates/*.md.j2`` (Jinja2); what they print comes from ``store.load`` (typed results), the
run's ``config.json`` (typed configs) and its saved tables and figures.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from markupsafe import Markup

from embedlab.report.common import render
from embedlab.report.glance import GLOSSARY, glance_rows, top_side_by_side
from embedlab.report.html import render_html
from embedlab.report.movies import movies_context
from embedlab.report.vision import finetune_context, probe_context
from embedlab.results import RunResults
from embedlab.runs import RunDir
from embedlab.store import Store, load
from embedlab.text import markdown_table


def summary_rows(results: RunResults) -> list[tuple[str, str, str, str]]:
    """(step, status, minutes, headline) for the closing table."""
    heads = {}
    if (p := results.probe) is not None:
        heads["probe"] = (
            f"test accuracy {100 * p.fit.evaluation.test_accuracy:.2f} % ({p.features.backbone}, "
            f"{p.features.resolution} px)"
        )
    if (f := results.finetune) is not None:
        heads["finetune"] = (
            f"test accuracy {100 * f.evaluation.test_accuracy:.2f} % ({f.epochs:g} epochs, {f.resolution} px)"
        )
    if (m := results.movies_fit) is not None:
        heads["movies"] = (
            f"best {m.best_optimizer} lr={m.best_lr:g}, {100 * m.best_gap_to_optimum:.2f} % above the optimum"
        )
    rows = []
    for step, v in results.steps.steps.items():
        minutes = f"{v.seconds / 60:.1f}" if v.seconds is not None else ""
        rows.append((step, v.status, minutes, heads[step] if step in heads else v.error or ""))
    return rows


def unfinished(results: RunResults) -> list[str]:
    """What did not finish, in words: failed or interrupted steps, and studies whose process ended mid-way."""
    out = []
    for step, v in results.steps.steps.items():
        if v.status in ("failed", "interrupted"):
            out.append(f"step {step} {v.status}: {v.error or ''}")
        elif v.status == "running":
            out.append(f"step {step} was interrupted: its process ended while it ran (killed, or the machine stopped)")
    movies = results.movies_run
    if movies is not None and movies.status is not None:
        out.append(f"the movie study {movies.status}")
    elif not results.steps.steps and results.has_movies and (movies is None or movies.total_seconds is None):
        out.append("the movie study was interrupted: its process ended before the study finished")
    return out


def _versions(run: RunDir) -> Markup | None:
    versions = Store(run).environment()
    if versions is None:
        return None
    return Markup(markdown_table(pd.DataFrame(list(versions.items()), columns=["software", "version"])))


def write_report(run: RunDir) -> Path:
    """Write ``report.md`` and ``report.html`` for whatever studies the run folder holds."""
    results = load(run)
    sections = []
    if results.probe is not None:
        sections.append(render("probe.md.j2", run, **probe_context(run, results)))
    if results.finetune is not None:
        sections.append(render("finetune.md.j2", run, **finetune_context(run, results)))
    if results.has_movies:
        sections.append(render("movies.md.j2", run, **movies_context(run, results)))
    rows = summary_rows(results)
    summary = (
        Markup(markdown_table(pd.DataFrame(rows, columns=["step", "status", "minutes", "result"]))) if rows else None
    )
    glance = glance_rows(results)  # the mission's questions, answered in a line each
    tops = top_side_by_side(results)
    config = Store(run).text("config.json")
    text = render(
        "report.md.j2",
        run,
        smoke=Store(run).profile() == "smoke",
        problems=unfinished(results),
        summary=summary,
        glance=glance,
        tops=Markup(markdown_table(tops)) if tops is not None else None,
        glossary=GLOSSARY,
        sections=[Markup(s) for s in sections],
        config_json=Markup(config.rstrip()) if config is not None else None,
        versions=_versions(run),
    )
    store = Store(run)
    return store.write_report(
        text.rstrip() + "\n", render_html(text.rstrip() + "\n", store, f"embedlab report — {run.path.name}")
    )
