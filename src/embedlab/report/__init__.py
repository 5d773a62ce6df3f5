"""Reports rendered from a run folder's saved artefacts only, so any finished run can be re-rendered.

``report.md`` (for GitHub) is the single source; ``report.html`` is the same text with every figure inlined.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from embedlab.report.html import write_html
from embedlab.report.movies import movies_section
from embedlab.report.vision import finetune_section, probe_section
from embedlab.runs import RunDir, markdown_table


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


def write_report(run: RunDir) -> Path:
    """Write ``report.md`` and ``report.html`` for whatever studies the run folder holds."""
    metrics = run.metrics()
    parts = [f"# embedlab report — `{run.path.name}`", ""]
    if "steps" in metrics:
        parts.append(summary_section(metrics))
    if "probe" in metrics and "test_accuracy" in metrics["probe"]:
        parts.append(probe_section(run))
    if "finetune" in metrics and "test_accuracy" in metrics["finetune"]:
        parts.append(finetune_section(run))
    if "movies_run" in metrics:
        parts.append(movies_section(run))
    if (run.path / "config.json").exists():
        parts.append(environment_section(run))
    out = run.path / "report.md"
    out.write_text("\n".join(parts).rstrip() + "\n")
    write_html(out)
    return out
