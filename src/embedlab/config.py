"""Typed, JSON-serialisable configs, one per study, plus named profiles.

A config is resolved once (defaults < profile < config file < flags), saved into the run folder
as ``config.json`` and never read from globals afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

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


# The range of every numeric setting, declared with its type (pydantic checks it whenever a value is set).
Count = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
#: numpy's and torch's seeds are unsigned 32-bit numbers at most (numpy's legacy generator refuses more).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Pixels = Annotated[int, Field(ge=32, le=512)]
PerClass = Annotated[int, Field(ge=1)]
ValPerClass = Annotated[int, Field(ge=1, le=4999)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # [0, 1)
OpenFraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]  # (0, 1)
GalleryK = Annotated[int, Field(ge=1, le=10)]

C = TypeVar("C")


@dataclass
class MoviesConfig:
    """Every knob of the movie-embedding study (Part 2)."""

    data_dir: str | None = None
    offline: bool = False
    allow_modified_data: bool = False  # ml-latest-small files that differ from the official release: refused unless True
    dataset: str = "ml-latest-small"  # or ml-25m, ml-32m, ml-latest (same CSV layout)
    synthetic: str | None = None  # generate ratings of this shape instead (ml-32m, 8x, ...); see movies/synthetic.py
    like_threshold: Annotated[float, Field(ge=0.5, le=5.0, allow_inf_nan=False)] = 4.0  # 4 and 5 stars (of 0.5..5): a clear "liked"; 3.5 is offered too
    dim: Count = 100  # chosen by held-out HitRate@10 in the dimension sweep (README, "Dimension"); 32 was the old, time-bound choice
    iterations: Count = 500
    seed: Seed = 0
    init_scale: Positive = 0.1  # V = 0 is a stationary point of the cost: the start must not be it
    grid: dict[Literal[OPTIMIZER_NAMES], Annotated[list[Positive], Field(min_length=1)]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_GRID.items()})
    divergence_factor: Annotated[float, Field(gt=1, allow_inf_nan=False)] = 10.0  # a run above this x its start cost diverged
    # the embedding used for recommendations: the sweep's best setting run to convergence (cost falling by
    # less than final_rel_tol over 10 iterations), at most final_iterations steps
    final_iterations: Count = 3000
    final_rel_tol: Fraction = 1e-7
    converged_gap: Positive = 0.01  # a run within 1 % of the spectral optimum counts as converged
    spectral_rounds: Count = 50
    metric: Literal["cosine", "dot"] = "cosine"
    min_likes: NonNegativeInt = 10
    top_k: Annotated[int, Field(ge=1, le=1000)] = 10
    queries: list[str] = field(default_factory=lambda: ["Apollo 13", "Toy Story", "Home Alone"])
    holdout_fraction: OpenFraction = 0.2
    holdout_seed: Seed = 0
    # at most this many (test user, liked movie) queries, a seeded uniform sample: bounds the co-count
    # baselines' cost at catalogue scale (ml-latest-small has 7.8 k, so all of them are used there)
    holdout_max_queries: Count = 20_000
    # the field's own recommenders beside the embedding in the held-out table, each tuned on a validation
    # slice of the training users: EASE (closed form, dense M x M: skipped above ease_max_items movies)
    # and ALS item factors from the `implicit` library
    anchors: list[Literal["ease", "als"]] = field(default_factory=lambda: ["ease", "als"])
    anchor_validation_fraction: OpenFraction = 0.2
    # lambda brackets the validation optimum (~3,000 on ml-latest-small); as lambda grows, EASE tends to raw co-counts
    ease_lambdas: Annotated[list[Positive], Field(min_length=1)] = field(default_factory=lambda: [100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0])
    ease_max_items: NonNegativeInt = 20_000
    als_factors: Annotated[list[Count], Field(min_length=1)] = field(default_factory=lambda: [32, 64, 128])
    als_regularization: Annotated[list[NonNegative], Field(min_length=1)] = field(default_factory=lambda: [0.1, 1.0, 10.0])
    als_alpha: Annotated[list[Positive], Field(min_length=1)] = field(default_factory=lambda: [1.0, 10.0])  # confidence of a like (Hu et al.'s alpha)
    als_iterations: Count = 15
    dim_sweep: list[Count] = field(default_factory=lambda: [10, 25, 50, 100, 200])  # empty = skip
    dim_sweep_lr_steps: NonNegativeInt = 3  # at each d, lower the learning rate by 3x up to this often until a run converges
    embedding_map: bool = True
    map_method: Literal["tsne", "pca"] = "tsne"  # or "pca"
    map_max_movies: Annotated[int, Field(ge=2)] = 5000  # the map shows at most this many most-liked eligible movies (t-SNE cost)

    def validate(self) -> None:
        """What the field types cannot say: a grid and a query at least, a known dataset, a synthetic shape that parses."""
        problems = []
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
            if self.dataset != "ml-latest-small":
                problems.append(f"--synthetic {self.synthetic} generates its ratings, so --dataset {self.dataset} would be ignored; "
                                "give one of the two")
        if not self.queries:
            problems.append("no query movies: give at least one --query")
        if problems:
            raise InputError("invalid movies config:\n  " + "\n  ".join(problems))


@dataclass
class ProbeConfig:
    """Every knob of the linear-probe study (Part 1 A and B)."""

    data_dir: str | None = None
    offline: bool = False
    backbone: str = "resnet18"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a state-dict file
    size: Pixels | None = None  # None: the backbone's native size on a GPU, cpu_size on a CPU
    cpu_size: Pixels = 128
    batch_size: Count | None = None  # extraction batch; None: 16 on a CPU (measured fastest, README), 128 on a GPU
    device: str = "auto"
    seed: Seed = 0
    val_per_class: ValPerClass = 500  # 5 000 validation images carved from the 50 000 training images
    train_per_class: PerClass | None = None  # None: all remaining training images
    test_per_class: PerClass | None = None  # None: the whole test set
    l2_grid: Annotated[list[NonNegative], Field(min_length=1)] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])  # weaker overfits: see README
    max_iter: Count = 200  # L-BFGS iterations of the probe's fit
    gallery_k: GalleryK = 5
    cache_dir: str | None = None

    def validate(self) -> None:
        """What the field types cannot say: the device is usable here, the backbone is known."""
        problems = [p for p in [device_problem(self.device)] if p]
        if self.backbone not in BACKBONE_NAMES:
            problems.append(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONE_NAMES)}")
        if problems:
            raise InputError("invalid probe config:\n  " + "\n  ".join(problems))


@dataclass
class FinetuneConfig:
    """Every knob of the fine-tuning study (Part 1 C). ``None`` sizes resolve by device (see ``resolve``)."""

    data_dir: str | None = None
    offline: bool = False
    backbone: str = "resnet18"
    weights: str = "imagenet"
    size: Pixels | None = None  # None: the backbone's native size on a GPU, cpu_size on a CPU
    cpu_size: Pixels = 112  # measured: best validation accuracy per CPU minute (README, "Choosing the CPU recipe")
    epochs: Count = 2  # the CPU recipe: 2 x 45 000 images at 112 px fit in ~45 min on 2 cores
    batch_size: Count = 64
    eval_batch_size: Count | None = None  # validation and test; None: 16 on a CPU (measured fastest, README), 256 on a GPU
    # measured at equal compute (README, issue-13 pilots): AdamW at 1e-3 beat SGD with Nesterov momentum at its best rate by +1.1 points
    optimizer: Literal["sgd", "adamw"] = "adamw"  # AdamW, or "sgd" (SGD with Nesterov momentum)
    lr: Positive = 0.001  # peak learning rate of the new head
    backbone_lr_scale: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0  # backbone lr = lr * this (e.g. 0.1 keeps pretrained features closer)
    momentum: Fraction = 0.9
    weight_decay: NonNegative = 5e-4  # not applied to norm and bias parameters
    label_smoothing: Fraction = 0.1
    # evaluate each image and its mirror image and average the probabilities (2 passes over validation and test)
    tta_flip: bool = True  # measured: +1.1 to +1.2 points of validation accuracy in every pilot (README)
    # progressive resizing: the first epoch's training resolution, rising linearly to the final one (None: the same throughout)
    start_size: Pixels | None = None
    # exponential moving average of the weights, evaluated instead of the last weights: its time constant as a fraction
    # of all training steps (so the same value means the same thing at any data size); 0 turns it off
    ema: Fraction = 0.0
    # the new classifier's start: "probe" (LP-FT: the linear probe's weights, folded through its standardisation),
    # "random", or "auto" (the default): the probe when the run folder holds one, so --no-probe means a random head
    head_init: Literal["auto", "random", "probe"] = "auto"
    warmup_fraction: Fraction = 0.1
    schedule: Literal["cosine", "onecycle"] = "cosine"  # linear warm-up then cosine to zero, or "onecycle"
    pad: Annotated[int, Field(ge=0, le=16)] = 4  # random crop with this much padding at 32 px, then horizontal flip, then resize
    # the padding's pixels: "zeros", or "reflect" (the image mirrored at its border; piloted: -0.26 points, within noise)
    pad_mode: Literal["zeros", "reflect"] = "zeros"
    # each training image's horizontal flip: a coin toss per epoch, or "alternate" (airbench; piloted: +0.12, within noise)
    flip: Literal["random", "alternate"] = "random"
    train_scope: Literal["all", "last"] = "all"  # "all" layers, or "last": the last stage and the head only
    # with train_scope "all": freeze the stem and the stages after it, K in all (0: none); frozen parts keep their
    # ImageNet BatchNorm statistics and cost no backward pass. None: none on a GPU; on a CPU the backbone's own
    # (efficientnet_lite1: 3, lite2: 4, others 0), which keeps a training image's cost at efficientnet_lite0's
    freeze_stages: NonNegativeInt | None = None
    device: str = "auto"
    seed: Seed = 0
    val_per_class: ValPerClass = 500  # the same validation split as the probe (same seed)
    train_per_class: PerClass | None = None
    test_per_class: PerClass | None = None
    gallery_k: GalleryK = 5
    probe: bool = True  # also run the linear probe in the same run folder, for the comparison
    probe_size: Pixels | None = None  # None: the probe's own default (native on a GPU, 128 px on a CPU); the table shows both
    cache_dir: str | None = None

    def validate(self) -> None:
        """What the field types cannot say: the device is usable here, the backbone is known, settings that go together."""
        problems = [p for p in [device_problem(self.device)] if p]
        if self.backbone not in BACKBONE_NAMES:
            problems.append(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONE_NAMES)}")
        if self.freeze_stages and self.train_scope == "last":
            problems.append("--freeze-stages goes with --train-scope all (--train-scope last already freezes all but the last stage)")
        if self.head_init == "probe" and not self.probe:
            problems.append("--head-init probe needs the linear probe; drop --no-probe")
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
    """A pydantic validator per dataclass field, from the field's type hint with its range (the dataclass stays plain)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls)}


#: Settings whose flag is not ``--`` + the field name with dashes.
FLAG_NAMES = {"top_k": "--top", "queries": "--query", "embedding_map": "--no-map", "probe": "--no-probe", "grid": "--optimizers/--lrs"}


def flag_name(key: str) -> str:
    return FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def _expected(hint: Any) -> str:
    """A type hint as a reader would write it: 'int', 'list[float]', "'sgd' or 'adamw'"."""
    if typing.get_origin(hint) is Annotated:
        return _expected(typing.get_args(hint)[0])
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _expected(a) for a in args)
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join(_expected(a) for a in args)}]" if args else name


def apply_overrides(cfg: C, overrides: Any, section: str = "", flags: bool = False) -> C:
    """A copy of ``cfg`` with ``overrides``, each value checked against its field's type hint and range.

    Strict: "64" is not an int, "no" not a bool, "Toy Story" not a list, 8.5 not an int (an int is a
    fine float), and 0 is not a dimension. pydantic does the checking, so the rules are its documented
    ones, not ours. ``flags``: the values came from the command line, so the message names the flag.
    """
    where = f"{section}." if section else ""
    if not isinstance(overrides, dict):
        raise ConfigError(f"config section {section or 'root'!r} must be a JSON object of settings, got {overrides!r}")
    types_ = _field_types(type(cfg))
    unknown = sorted(set(overrides) - set(types_))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; valid keys: {', '.join(sorted(types_))}")
    clean, problems = {}, []
    for key, value in overrides.items():  # every bad value is named at once, not one per try
        try:
            clean[key] = types_[key].validate_python(value, strict=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            at = "".join(f"[{p!r}]" for p in err["loc"] if p != "[key]")  # a bad dict key is named by its own path
            hint = typing.get_type_hints(type(cfg), include_extras=True)[key]
            name = f"{flag_name(key)} {value!r}" + (f", at {at}" if at else "") if flags else f"config value {where}{key}{at} = {value!r}"
            range_error = err["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long",
                                          "finite_number", "literal_error")
            problems.append(f"{name}: {err['msg'].lower()}" + ("" if range_error else f" (expected {_expected(hint)})"))
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(cfg, **clean)  # type: ignore[type-var]


#: The settings sections of a study's config file (a run's config.json); "study" and "steps" say what ran.
STUDY_SECTIONS = ("probe", "finetune", "movies")
CONFIG_KEYS = ("study", "steps", *STUDY_SECTIONS)


def check_sections(data: dict[str, Any], source: object) -> dict[str, Any]:
    """``data`` if every top-level key is a section embedlab reads; a misspelt section is an error, never ignored."""
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown} in {source}; a study's config file has {', '.join(CONFIG_KEYS)}")
    return data


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
    except OSError as exc:  # no permission, a device that cannot be read, ...
        raise ConfigError(f"config file {p} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a JSON object of settings")
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-ready data."""
    return asdict(cfg)
