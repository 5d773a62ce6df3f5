"""Named profiles, one vocabulary for every command: the overrides each gives each study's defaults."""

from __future__ import annotations

import json
from typing import Any

from embedlab.errors import InputError

#: Named profiles, one vocabulary for every command: each gives the overrides of each study's defaults.
#: "auto" is "gpu" on CUDA and "cpu" otherwise; "default" is today's other spelling of "auto".
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"probe": {}, "finetune": {}, "movies": {}},
    "gpu": {
        "probe": {},
        "finetune": {"size": 224, "epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.05},
        "movies": {},
    },
    "smoke": {
        "probe": {
            "train_per_class": 100,
            "val_per_class": 50,
            "test_per_class": 100,
            "cpu_size": 64,
            "size": 64,
            "max_iter": 100,
        },
        "finetune": {
            "train_per_class": 100,
            "val_per_class": 20,
            "test_per_class": 30,
            "size": 64,
            "epochs": 2,
            "batch_size": 32,
        },
        "movies": {
            "dim": 16,  # seconds, not the quality-chosen 100 (whose spectral reference alone takes ~30 s)
            "iterations": 100,
            "grid": {"sgd": [3e-5, 1e-4], "adam": [0.3, 1.0]},
            "spectral_rounds": 5,
            "map_method": "pca",
            "dim_sweep": [8, 16],
            "final_iterations": 300,
            "ease_lambdas": [300.0, 3000.0],  # the anchors' code path, on a two-setting grid each
            "als_factors": [32],
            "als_regularization": [1.0],
            "als_alpha": [1.0, 10.0],
        },
    },
}


PROFILE_NAMES = ("auto", *PROFILES)


PROFILE_ALIASES = {"default": "auto"}


def resolve_profile(name: str, cuda: bool) -> str:
    """``auto`` (or ``default``) is ``gpu`` on CUDA, else ``cpu``; an unknown name is an error listing the known
    ones."""
    name = PROFILE_ALIASES.get(name, name)
    if name == "auto":
        return "gpu" if cuda else "cpu"
    if name not in PROFILES:
        raise InputError(f"unknown profile {name!r}; choose from {', '.join(PROFILE_NAMES)}")
    return name


def profile_overrides(name: str, section: str, cuda: bool) -> dict[str, Any]:
    """The overrides a named profile gives one study's defaults (a copy)."""
    return json.loads(json.dumps(PROFILES[resolve_profile(name, cuda)][section]))
