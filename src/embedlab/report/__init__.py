"""Reports rendered from a run folder's saved artefacts only, so any finished run can be re-rendered."""

from __future__ import annotations

from pathlib import Path

from embedlab.report.movies import movies_section
from embedlab.report.vision import finetune_section, probe_section
from embedlab.runs import RunDir


def write_report(run: RunDir) -> Path:
    """Write ``report.md`` for whatever studies the run folder holds."""
    metrics = run.read_json("metrics.json") if (run.path / "metrics.json").exists() else {}
    parts = [f"# embedlab report — `{run.path.name}`", ""]
    if "probe" in metrics and "test_accuracy" in metrics["probe"]:
        parts.append(probe_section(run))
    if "finetune" in metrics and "test_accuracy" in metrics["finetune"]:
        parts.append(finetune_section(run))
    if any(k.startswith("movies") for k in metrics):
        parts.append(movies_section(run))
    out = run.path / "report.md"
    out.write_text("\n".join(parts).rstrip() + "\n")
    return out
