"""What the vision sections of the report print (templates ``probe.md.j2`` and ``finetune.md.j2``), from typed
results."""

from __future__ import annotations

from typing import Any

import pandas as pd
from markupsafe import Markup

from embedlab.config import FinetuneConfig, ProbeConfig
from embedlab.report.common import saved_config
from embedlab.report.glance import compared_accuracies
from embedlab.report.vision_explorer import PLACEHOLDER
from embedlab.results import RunResults
from embedlab.runs import RunDir
from embedlab.store import Store


def probe_context(run: RunDir, results: RunResults) -> dict[str, Any]:
    """Part 1A (choices and accuracy) and 1B (galleries) of a linear-probe run."""
    cfg, _ = saved_config(run, ProbeConfig, "probe")
    return {"probe": results.probe, "cfg": cfg}


def finetune_context(run: RunDir, results: RunResults) -> dict[str, Any]:
    """Part 1C: the recipe as it ran, the fine-tuned model's A and B, and the comparison with the probe."""
    c, resolved = saved_config(run, FinetuneConfig, "finetune")
    context: dict[str, Any] = {
        "finetune": results.finetune,
        "probe": results.probe,
        "c": c,
        "resolved": resolved,
        "comparison": results.comparison,
        "explorer": Markup(PLACEHOLDER),
        # the main job resumes its steps itself: the ledger of finished steps is its own
        "resume_command": "run" if results.steps.steps else "vision finetune",
    }
    if results.comparison is not None:
        store = Store(run)
        pc = store.table("comparison_per_class")
        pc = pc.iloc[pc["gain"].abs().argsort(kind="stable")]  # by the size of the change, whatever its sign
        wall = store.table("comparison")["train_wall_seconds"]
        assert results.probe is not None and results.finetune is not None  # a comparison has both
        accuracies = compared_accuracies(results.probe, results.finetune, results.comparison)
        context.update(
            largest=pc.iloc[-1].to_dict(),
            smallest=pc.iloc[0].to_dict(),
            probe_time=None if pd.isna(wall.iloc[0]) else float(wall.iloc[0]),
            compared=dict(zip(("probe", "finetune", "where"), accuracies)),
        )
    return context
