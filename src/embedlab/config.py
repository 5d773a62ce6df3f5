"""Typed, JSON-serialisable configs, one per study, plus named profiles.

A config is resolved once (defaults < profile < config file < flags), saved into the run folder
as ``config.json`` and never read from globals afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from embedlab.errors import InputError

#: The valid names live here, on the ground floor; the studies import them and map each to its code
#: (a test checks that the two agree), so this module never imports a study.
SIMILARITY_METRICS = ("cosine", "dot")
OPTIMIZER_NAMES = ("sgd", "nesterov", "adagrad", "rmsprop", "adam")
BACKBONE_NAMES = ("resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

#: Learning-rate grids of the default sweep. Each spans too small (far from the optimum after the
#: budget) to too large (diverges), measured on ml-latest-small at the default d = 100; see the README.
DEFAULT_GRID: dict[str, list[float]] = {
    "sgd": [3e-6, 1e-5, 3e-5, 1e-4],
    "nesterov": [3e-6, 1e-5, 2e-5, 3e-5],
    "adagrad": [0.03, 0.1, 0.3, 1.0],
    "rmsprop": [0.001, 0.003, 0.01, 0.03],
    "adam": [0.01, 0.1, 0.3, 1.0],
}


@dataclass
class MoviesConfig:
    """Every knob of the movie-embedding study (Part 2)."""

    data_dir: str | None = None
    offline: bool = False
    allow_modified_data: bool = False  # ml-latest-small files that differ from the official release: refused unless True
    dataset: str = "ml-latest-small"  # or ml-25m, ml-32m, ml-latest (same CSV layout)
    synthetic: str | None = None  # generate ratings of this shape instead (ml-32m, 8x, ...); see movies/synthetic.py
    like_threshold: float = 4.0  # 4 and 5 stars (of 0.5..5): a clear "liked"; 3.5 is offered too
    dim: int = 100  # chosen by held-out HitRate@10 in the dimension sweep (README, "Dimension"); 32 was the old, time-bound choice
    iterations: int = 500
    seed: int = 0
    init_scale: float = 0.1
    grid: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_GRID.items()})
    divergence_factor: float = 10.0
    # the embedding used for recommendations: the sweep's best setting run to convergence (cost falling by
    # less than final_rel_tol over 10 iterations), at most final_iterations steps
    final_iterations: int = 3000
    final_rel_tol: float = 1e-7
    converged_gap: float = 0.01  # a run within 1 % of the spectral optimum counts as converged
    spectral_rounds: int = 50
    metric: str = "cosine"
    min_likes: int = 10
    top_k: int = 10
    queries: list[str] = field(default_factory=lambda: ["Apollo 13", "Toy Story", "Home Alone"])
    holdout_fraction: float = 0.2
    holdout_seed: int = 0
    # at most this many (test user, liked movie) queries, a seeded uniform sample: bounds the co-count
    # baselines' cost at catalogue scale (ml-latest-small has 7.8 k, so all of them are used there)
    holdout_max_queries: int = 20_000
    # the field's own recommenders beside the embedding in the held-out table, each tuned on a validation
    # slice of the training users: EASE (closed form, dense M x M: skipped above ease_max_items movies)
    # and ALS item factors from the `implicit` library
    anchors: list[str] = field(default_factory=lambda: ["ease", "als"])
    anchor_validation_fraction: float = 0.2
    # lambda brackets the validation optimum (~3,000 on ml-latest-small); as lambda grows, EASE tends to raw co-counts
    ease_lambdas: list[float] = field(default_factory=lambda: [100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0])
    ease_max_items: int = 20_000
    als_factors: list[int] = field(default_factory=lambda: [32, 64, 128])
    als_regularization: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])
    als_alpha: list[float] = field(default_factory=lambda: [1.0, 10.0])  # confidence of a like (Hu et al.'s alpha)
    als_iterations: int = 15
    dim_sweep: list[int] = field(default_factory=lambda: [10, 25, 50, 100, 200])  # empty = skip
    dim_sweep_lr_steps: int = 3  # at each d, lower the learning rate by 3x up to this often until a run converges
    embedding_map: bool = True
    map_method: str = "tsne"  # or "pca"
    map_max_movies: int = 5000  # the map shows at most this many most-liked eligible movies (t-SNE cost)

    def validate(self) -> None:
        """Reject impossible settings up front, before any work is done."""
        problems = []
        if self.dim < 1:
            problems.append(f"--dim must be >= 1 (got {self.dim})")
        if self.iterations < 1:
            problems.append(f"--iterations must be >= 1 (got {self.iterations})")
        if self.final_iterations < 1 or not 0 <= self.final_rel_tol < 1:
            problems.append(f"final_iterations must be >= 1 and final_rel_tol in [0, 1) (got {self.final_iterations}, {self.final_rel_tol})")
        if not 0.5 <= self.like_threshold <= 5.0:
            problems.append(f"--like-threshold must be between 0.5 and 5 stars (got {self.like_threshold})")
        if self.metric not in SIMILARITY_METRICS:
            problems.append(f"--metric must be one of {SIMILARITY_METRICS} (got {self.metric!r})")
        if self.top_k < 1:
            problems.append(f"--top must be >= 1 (got {self.top_k})")
        if self.map_method not in ("tsne", "pca"):
            problems.append(f"map_method must be 'tsne' or 'pca' (got {self.map_method!r})")
        for name, lrs in self.grid.items():
            if name not in OPTIMIZER_NAMES:
                problems.append(f"unknown optimiser {name!r} in the grid; choose from {', '.join(OPTIMIZER_NAMES)}")
            if not lrs or any(not lr > 0 for lr in lrs):
                problems.append(f"optimiser {name!r} needs positive learning rates (got {lrs})")
        if not self.grid:
            problems.append("the optimiser grid is empty")
        from embedlab.data import MOVIELENS_DATASETS, shape_of

        if self.dataset not in MOVIELENS_DATASETS:
            problems.append(f"--dataset must be one of {', '.join(MOVIELENS_DATASETS)} (got {self.dataset!r})")
        if self.synthetic is not None:
            try:
                shape_of(self.synthetic)
            except ValueError as exc:
                problems.append(str(exc))
        if any(not isinstance(d, int) or d < 1 for d in self.dim_sweep):
            problems.append(f"--dim-sweep needs positive integers (got {self.dim_sweep})")
        if self.dim_sweep_lr_steps < 0 or self.map_max_movies < 2:
            problems.append("dim_sweep_lr_steps must be >= 0 and map_max_movies >= 2")
        if not 0 < self.holdout_fraction < 1:
            problems.append(f"holdout_fraction must be in (0, 1) (got {self.holdout_fraction})")
        if self.holdout_max_queries < 1:
            problems.append(f"holdout_max_queries must be >= 1 (got {self.holdout_max_queries})")
        if unknown := sorted(set(self.anchors) - {"ease", "als"}):
            problems.append(f"anchors must be among 'ease', 'als' (got {unknown})")
        if not 0 < self.anchor_validation_fraction < 1:
            problems.append(f"anchor_validation_fraction must be in (0, 1) (got {self.anchor_validation_fraction})")
        if not self.ease_lambdas or any(not lam > 0 for lam in self.ease_lambdas):
            problems.append(f"ease_lambdas must be positive (got {self.ease_lambdas})")
        if not self.als_factors or any(f < 1 for f in self.als_factors) or not self.als_regularization \
                or any(r < 0 for r in self.als_regularization) or not self.als_alpha or any(not a > 0 for a in self.als_alpha) \
                or self.als_iterations < 1:
            problems.append("als_factors must be >= 1, als_regularization >= 0, als_alpha > 0 and als_iterations >= 1")
        if problems:
            raise InputError("invalid movies config:\n  " + "\n  ".join(problems))


@dataclass
class ProbeConfig:
    """Every knob of the linear-probe study (Part 1 A and B)."""

    data_dir: str | None = None
    offline: bool = False
    backbone: str = "resnet18"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a state-dict file
    size: int | None = None  # None: the backbone's native size on a GPU, cpu_size on a CPU
    cpu_size: int = 128
    batch_size: int | None = None  # extraction batch; None: 16 on a CPU (measured fastest, README), 128 on a GPU
    device: str = "auto"
    seed: int = 0
    val_per_class: int = 500  # 5 000 validation images carved from the 50 000 training images
    train_per_class: int | None = None  # None: all remaining training images
    test_per_class: int | None = None  # None: the whole test set
    l2_grid: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])  # weaker overfits: see README
    max_iter: int = 200
    gallery_k: int = 5
    cache_dir: str | None = None

    def validate(self) -> None:
        problems = [p for p in [device_problem(self.device)] if p]
        if self.backbone not in BACKBONE_NAMES:
            problems.append(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONE_NAMES)}")
        for name, v in (("size", self.size), ("cpu_size", self.cpu_size)):
            if v is not None and not 32 <= v <= 512:
                problems.append(f"--{name.replace('_', '-')} must be between 32 and 512 pixels (got {v})")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1 (got {self.batch_size})")
        if not 1 <= self.val_per_class < 5000:
            problems.append(f"--val-per-class must be in 1..4999 (got {self.val_per_class})")
        if self.train_per_class is not None and self.train_per_class < 1:
            problems.append(f"--train-per-class must be >= 1 (got {self.train_per_class})")
        if not self.l2_grid or any(v < 0 for v in self.l2_grid):
            problems.append(f"--l2-grid needs non-negative values (got {self.l2_grid})")
        if not 1 <= self.gallery_k <= 10:
            problems.append(f"gallery_k must be in 1..10 (got {self.gallery_k})")
        if problems:
            raise InputError("invalid probe config:\n  " + "\n  ".join(problems))


@dataclass
class FinetuneConfig:
    """Every knob of the fine-tuning study (Part 1 C). ``None`` sizes resolve by device (see ``resolve``)."""

    data_dir: str | None = None
    offline: bool = False
    backbone: str = "resnet18"
    weights: str = "imagenet"
    size: int | None = None  # None: the backbone's native size on a GPU, cpu_size on a CPU
    cpu_size: int = 112  # measured: best validation accuracy per CPU minute (README, "Choosing the CPU recipe")
    epochs: int = 2  # the CPU recipe: 2 x 45 000 images at 112 px fit in ~45 min on 2 cores
    batch_size: int = 64
    eval_batch_size: int | None = None  # validation and test; None: 16 on a CPU (measured fastest, README), 256 on a GPU
    # measured at equal compute (README, issue-13 pilots): AdamW at 1e-3 beat SGD with Nesterov momentum at its best rate by +1.1 points
    optimizer: str = "adamw"  # AdamW, or "sgd" (SGD with Nesterov momentum)
    lr: float = 0.001  # peak learning rate of the new head
    backbone_lr_scale: float = 1.0  # backbone lr = lr * this (e.g. 0.1 keeps pretrained features closer)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to norm and bias parameters
    label_smoothing: float = 0.1
    # evaluate each image and its mirror image and average the probabilities (2 passes over validation and test)
    tta_flip: bool = True  # measured: +1.1 to +1.2 points of validation accuracy in every pilot (README)
    # progressive resizing: the first epoch's training resolution, rising linearly to the final one (None: the same throughout)
    start_size: int | None = None
    # exponential moving average of the weights, evaluated instead of the last weights: its time constant as a fraction
    # of all training steps (so the same value means the same thing at any data size); 0 turns it off
    ema: float = 0.0
    # the new classifier's start: "probe" (LP-FT: the linear probe's weights, folded through its standardisation),
    # "random", or "auto" (the default): the probe when the run folder holds one, so --no-probe means a random head
    head_init: str = "auto"
    warmup_fraction: float = 0.1
    schedule: str = "cosine"  # linear warm-up then cosine to zero, or "onecycle"
    pad: int = 4  # random crop with this much padding at 32 px, then horizontal flip, then resize
    # the padding's pixels: "zeros", or "reflect" (the image mirrored at its border; piloted: -0.26 points, within noise)
    pad_mode: str = "zeros"
    # each training image's horizontal flip: a coin toss per epoch, or "alternate" (airbench; piloted: +0.12, within noise)
    flip: str = "random"
    train_scope: str = "all"  # "all" layers, or "last": the last stage and the head only
    # with train_scope "all": freeze the stem and the stages after it, K in all (0: none); frozen parts keep their
    # ImageNet BatchNorm statistics and cost no backward pass. None: none on a GPU; on a CPU the backbone's own
    # (efficientnet_lite1: 3, lite2: 4, others 0), which keeps a training image's cost at efficientnet_lite0's
    freeze_stages: int | None = None
    device: str = "auto"
    seed: int = 0
    val_per_class: int = 500  # the same validation split as the probe (same seed)
    train_per_class: int | None = None
    test_per_class: int | None = None
    gallery_k: int = 5
    probe: bool = True  # also run the linear probe in the same run folder, for the comparison
    probe_size: int | None = None  # None: the probe's own default (native on a GPU, 128 px on a CPU); the table shows both
    cache_dir: str | None = None

    def validate(self) -> None:
        problems = [p for p in [device_problem(self.device)] if p]
        if self.backbone not in BACKBONE_NAMES:
            problems.append(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONE_NAMES)}")
        for name, v in (("size", self.size), ("cpu_size", self.cpu_size), ("probe_size", self.probe_size), ("start_size", self.start_size)):
            if v is not None and not 32 <= v <= 512:
                problems.append(f"--{name.replace('_', '-')} must be between 32 and 512 pixels (got {v})")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if not self.lr > 0:
            problems.append(f"--lr must be > 0 (got {self.lr})")
        if not 0 < self.backbone_lr_scale <= 1:
            problems.append(f"--backbone-lr-scale must be in (0, 1] (got {self.backbone_lr_scale})")
        if self.optimizer not in ("sgd", "adamw"):
            problems.append(f"--optimizer must be sgd or adamw (got {self.optimizer!r})")
        if self.pad_mode not in ("zeros", "reflect"):
            problems.append(f"--pad-mode must be zeros or reflect (got {self.pad_mode!r})")
        if self.flip not in ("random", "alternate"):
            problems.append(f"--flip must be random or alternate (got {self.flip!r})")
        if self.schedule not in ("cosine", "onecycle"):
            problems.append(f"--schedule must be cosine or onecycle (got {self.schedule!r})")
        if self.train_scope not in ("all", "last"):
            problems.append(f"--train-scope must be all or last (got {self.train_scope!r})")
        if self.freeze_stages is not None and self.freeze_stages < 0:
            problems.append(f"--freeze-stages must be >= 0 (got {self.freeze_stages})")
        elif self.freeze_stages and self.train_scope == "last":
            problems.append("--freeze-stages goes with --train-scope all (--train-scope last already freezes all but the last stage)")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"--warmup-fraction must be in [0, 1) (got {self.warmup_fraction})")
        if not 0 <= self.ema < 1:
            problems.append(f"--ema must be in [0, 1), a fraction of the training steps (got {self.ema})")
        if self.head_init not in ("auto", "random", "probe"):
            problems.append(f"--head-init must be auto, random or probe (got {self.head_init!r})")
        elif self.head_init == "probe" and not self.probe:
            problems.append("--head-init probe needs the linear probe; drop --no-probe")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})")
        for name, ok, rule in (("weight_decay", self.weight_decay >= 0, ">= 0"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                               ("pad", 0 <= self.pad <= 16, "in 0..16 pixels")):
            if not ok:
                problems.append(f"--{name.replace('_', '-')} must be {rule} (got {getattr(self, name)})")
        if not 1 <= self.val_per_class < 5000:
            problems.append(f"--val-per-class must be in 1..4999 (got {self.val_per_class})")
        if self.train_per_class is not None and self.train_per_class < 1:
            problems.append(f"--train-per-class must be >= 1 (got {self.train_per_class})")
        if not 1 <= self.gallery_k <= 10:
            problems.append(f"gallery_k must be in 1..10 (got {self.gallery_k})")
        if problems:
            raise InputError("invalid finetune config:\n  " + "\n  ".join(problems))

    def probe_config(self) -> ProbeConfig:
        """The linear probe the fine-tuned model is compared with: same data, split, backbone and weights."""
        shared = {k: getattr(self, k) for k in ("data_dir", "offline", "backbone", "weights", "device", "seed",
                                                 "val_per_class", "train_per_class", "test_per_class", "gallery_k", "cache_dir")}
        return ProbeConfig(**shared, size=self.probe_size)


#: Fine-tuning recipes. "auto" picks "gpu" on CUDA and "cpu" otherwise.
FINETUNE_PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": {"size": 224, "epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.05},
    "smoke": {"train_per_class": 100, "val_per_class": 20, "test_per_class": 30, "size": 64, "epochs": 2, "batch_size": 32},
}


def finetune_profile(name: str, cuda: bool) -> dict[str, Any]:
    """Overrides of a named profile; ``auto`` resolves to ``gpu`` or ``cpu`` by the device."""
    if name == "auto":
        name = "gpu" if cuda else "cpu"
    if name not in FINETUNE_PROFILES:
        raise InputError(f"unknown profile {name!r}; choose from auto, {', '.join(FINETUNE_PROFILES)}")
    return dict(FINETUNE_PROFILES[name])


PROBE_PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "smoke": {"train_per_class": 100, "val_per_class": 50, "test_per_class": 100, "cpu_size": 64, "size": 64, "max_iter": 100},
}

#: Named profiles: overrides applied on top of the defaults.
MOVIES_PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "smoke": {
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
}

C = TypeVar("C")


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here (None if it can): checked before any data is loaded."""
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        return f"--device must be auto, cpu, cuda, cuda:N or mps (got {device!r})"
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"--device {device}: this machine has no CUDA device visible to torch; use --device cpu (or auto)"
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        return "--device mps: Apple's MPS backend is not available here; use --device cpu (or auto)"
    return None


class ConfigError(InputError):
    """A config section, key or value that cannot be used: one line for the user, naming the key."""


@functools.cache
def _field_types(cls: type) -> dict[str, TypeAdapter]:
    """A pydantic validator per dataclass field, from the field's type hint (the dataclass stays plain)."""
    hints = typing.get_type_hints(cls)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls)}


def apply_overrides(cfg: C, overrides: Any, section: str = "") -> C:
    """A copy of ``cfg`` with ``overrides``, each value checked against its field's type hint.

    Strict: "64" is not an int, "no" not a bool, "Toy Story" not a list, 8.5 not an int (an int is a
    fine float). pydantic does the checking, so the rules are its documented ones, not ours.
    """
    where = f"{section}." if section else ""
    if not isinstance(overrides, dict):
        raise ConfigError(f"config section {section or 'root'!r} must be a JSON object of settings, got {overrides!r}")
    types = _field_types(type(cfg))
    unknown = sorted(set(overrides) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; valid keys: {', '.join(sorted(types))}")
    clean = {}
    for key, value in overrides.items():
        try:
            clean[key] = types[key].validate_python(value, strict=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            at = "".join(f"[{p!r}]" for p in err["loc"])
            hint = typing.get_type_hints(type(cfg))[key]
            expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ConfigError(f"config value {where}{key}{at} = {value!r}: {err['msg'].lower()} (expected {expected})") from None
    return dataclasses.replace(cfg, **clean)  # type: ignore[type-var]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON object of config overrides (the format ``config.json`` is saved in)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {p} is a directory; pass a JSON file (a run's config.json, for example)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a JSON object of settings")
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-ready data."""
    return asdict(cfg)
