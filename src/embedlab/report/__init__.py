"""Reports rendered from a run folder's saved artefacts only, so any finished run can be re-rendered.

``report.md`` (for GitHub) is the single source; ``report.html`` is the same text with every figure inlined.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from embedlab.report.html import render_report_html
from embedlab.report.movies import movies_section
from embedlab.report.vision import finetune_section, probe_section
from embedlab.runs import RunDir, markdown_table, md_code, md_text


def summary_rows(metrics: dict) -> list[tuple[str, str, str, str]]:
    """(step, status, minutes, headline) for the closing table."""
    heads = {}
    if "test_accuracy" in metrics.get("probe", {}):
        p = metrics["probe"]
        heads["probe"] = f"test accuracy {100 * p['test_accuracy']:.2f} % ({p['backbone']}, {p['resolution']} px)"
    if "test_accuracy" in metrics.get("finetune", {}):
        f = metrics["finetune"]
        heads["finetune"] = f"test accuracy {100 * f['test_accuracy']:.2f} % ({f['epochs']} epochs, {f['resolution']} px)"
    if "movies_fit" in metrics:
        m = metrics["movies_fit"]
        heads["movies"] = f"best {m['best_optimizer']} lr={m['best_lr']:g}, {100 * m['best_gap_to_optimum']:.2f} % above the optimum"
    rows = []
    for step, v in metrics.get("steps", {}).items():
        minutes = f"{v['seconds'] / 60:.1f}" if "seconds" in v else ""
        rows.append((step, v.get("status", ""), minutes, heads.get(step, v.get("error", ""))))
    return rows


def summary_section(metrics: dict) -> str:
    """The answers in one table, with each step's status and time (only for folders made by ``embedlab run``)."""
    rows = summary_rows(metrics)
    if not rows:
        return ""
    return "\n".join(["## Summary", "", markdown_table(pd.DataFrame(rows, columns=["step", "status", "minutes", "result"]))]) + "\n"


def environment_section(run: RunDir) -> str:
    """The exact config and the software that produced the numbers."""
    out = ["## Configuration and software", "",
           "The exact settings of this run (`config.json`; pass it back with `--config` to repeat the run):", "",
           "```json", (run.path / "config.json").read_text().rstrip(), "```", ""]
    env = run.path / "environment.json"
    if env.exists():
        versions = json.loads(env.read_text())
        out += [markdown_table(pd.DataFrame(list(versions.items()), columns=["software", "version"])), ""]
    return "\n".join(out)


def unfinished(metrics: dict) -> list[str]:
    """What did not finish, in words: failed or interrupted steps, and studies whose process ended mid-way."""
    out = []
    steps = metrics.get("steps")
    for step, v in (steps if isinstance(steps, dict) else {}).items():
        status = v.get("status") if isinstance(v, dict) else None
        if status in ("failed", "interrupted"):
            out.append(f"step {step} {status}: {v.get('error', '')}")
        elif status == "running":
            out.append(f"step {step} was interrupted: its process ended while it ran (killed, or the machine stopped)")
    movies = metrics.get("movies_run") if isinstance(metrics.get("movies_run"), dict) else {}
    if "status" in movies:
        out.append(f"the movie study {movies['status']}")
    elif not metrics.get("steps") and any(k.startswith("movies_") for k in metrics) and "total_seconds" not in movies:
        out.append("the movie study was interrupted: its process ended before the study finished")
    return out


def write_report(run: RunDir) -> Path:
    """Write ``report.md`` and ``report.html`` for whatever studies the run folder holds."""
    metrics = run.metrics()
    parts = [f"# embedlab report — {md_code(run.path.name)}", ""]
    if problems := unfinished(metrics):
        parts += ["**This run did not finish.** What is below is what was computed before it stopped:", "",
                  *[f"- {md_text(p)}" for p in problems], "",
                  "Continue it with the command that made it and `--resume` " + md_code(run.path) + ": finished steps are kept.", ""]
    if "steps" in metrics:
        parts.append(summary_section(metrics))
    if "probe" in metrics and "test_accuracy" in metrics["probe"]:
        parts.append(probe_section(run))
    if "finetune" in metrics and "test_accuracy" in metrics["finetune"]:
        parts.append(finetune_section(run))
    if "movies_run" in metrics or "movies_data" in metrics:
        parts.append(movies_section(run))
    if (run.path / "config.json").exists():
        parts.append(environment_section(run))
    out = run.write_text("report.md", "\n".join(parts).rstrip() + "\n")
    run.write_text("report.html", render_report_html(out))
    return out
