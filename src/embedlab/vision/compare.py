"""Fixed features vs fine-tuning, computed from saved metrics only (so any finished run can be compared again)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from embedlab.errors import InputError

METHODS = {"probe": "fixed features + logistic regression", "finetune": "fine-tuned network"}


def _cost(m: dict[str, Any], key: str) -> dict[str, Any]:
    """Training wall time and speed of one method; None where the run did not measure it."""
    if key == "probe":
        extract = m.get("extract_train_seconds")  # one pass over train + validation images through the frozen network
        return {"train_wall_seconds": None if extract is None else extract + m["fit_seconds"],
                "train_images_per_second": m.get("extract_train_images_per_second"),
                "test_images_per_second": m.get("extract_test_images_per_second")}
    return {"train_wall_seconds": m["train_seconds"] + m.get("val_seconds", 0.0),
            "train_images_per_second": m["train_images_per_second"], "test_images_per_second": m["test_images_per_second"]}


def comparison_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per method: accuracy, trainable parameters, resolution, wall time and images/s."""
    missing = [k for k in METHODS if "test_accuracy" not in metrics.get(k, {})]
    if missing:
        raise InputError(f"cannot compare: metrics.json has no finished {' or '.join(missing)} study")
    rows = []
    for key, label in METHODS.items():
        m = metrics[key]
        rows.append({"method": label, "backbone": m["backbone"], "resolution": m["resolution"], "test_accuracy": m["test_accuracy"],
                     "val_accuracy": m["val_accuracy"], "trainable_parameters": m["trainable_parameters"], **_cost(m, key)})
    return pd.DataFrame(rows)


def per_class_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per-class test accuracy side by side, with the gain of fine-tuning."""
    probe, ft = metrics["probe"]["per_class_accuracy"], metrics["finetune"]["per_class_accuracy"]
    df = pd.DataFrame({"class": list(probe), "fixed_features": list(probe.values()), "fine_tuned": [ft[c] for c in probe]})
    return df.assign(gain=df["fine_tuned"] - df["fixed_features"])
