"""Fixed features vs fine-tuning, computed from the two saved results only (so any finished run can be compared
again)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from embedlab.errors import InputError
from embedlab.results import FinetuneResult, ProbeResult

METHODS = {"probe": "fixed features + logistic regression", "finetune": "fine-tuned network"}


def _probe_cost(p: ProbeResult) -> dict[str, Any]:
    """Training wall time of the probe: one pass over train + validation images through the frozen network, then the fit
    (None when the features came from a cache that kept no timings)."""
    extract = p.features.extract_train_seconds
    return {
        "train_wall_seconds": None if extract is None else extract + p.fit.fit_seconds,
        "train_images_per_second": p.features.extract_train_images_per_second,
        "test_images_per_second": p.features.extract_test_images_per_second,
    }


def comparison_table(probe: ProbeResult | None, finetune: FinetuneResult | None) -> pd.DataFrame:
    """One row per method: accuracy, trainable parameters, resolution, wall time and images/s."""
    missing = [k for k, r in (("probe", probe), ("finetune", finetune)) if r is None]
    if missing:
        raise InputError(f"cannot compare: metrics.json has no finished {' or '.join(missing)} study")
    assert probe is not None and finetune is not None
    f = finetune
    rows = [
        {
            "method": METHODS["probe"],
            "backbone": probe.features.backbone,
            "resolution": probe.features.resolution,
            "test_accuracy": probe.fit.evaluation.test_accuracy,
            "val_accuracy": probe.fit.val_accuracy,
            "trainable_parameters": probe.fit.trainable_parameters,
            **_probe_cost(probe),
        },
        {
            "method": METHODS["finetune"],
            "backbone": f.backbone,
            "resolution": f.resolution,
            "test_accuracy": f.evaluation.test_accuracy,
            "val_accuracy": f.val_accuracy,
            "trainable_parameters": f.trainable_parameters,
            "train_wall_seconds": f.train_seconds + f.val_seconds,
            "train_images_per_second": f.train_images_per_second,
            "test_images_per_second": f.test_images_per_second,
        },
    ]
    return pd.DataFrame(rows)


def per_class_table(probe: ProbeResult, finetune: FinetuneResult) -> pd.DataFrame:
    """Per-class test accuracy side by side, with the gain of fine-tuning."""
    p, ft = probe.fit.evaluation.per_class_accuracy, finetune.evaluation.per_class_accuracy
    df = pd.DataFrame({"class": list(p), "fixed_features": list(p.values()), "fine_tuned": [ft[c] for c in p]})
    return df.assign(gain=df["fine_tuned"] - df["fixed_features"])
