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


def summary_section(metrics: dict) -> str:
    """The answers in one table, with each step's status and time (only for folders made by ``embedlab run``)."""
    from embedlab.study import summary_rows

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
    metrics = run.read_json("metrics.json") if (run.path / "metrics.json").exists() else {}
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
