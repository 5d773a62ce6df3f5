"""Typed, JSON-serialisable configs, one per study: every setting declared once (``schema.setting``); the named profiles
that override them are in ``profiles``.

A config is resolved once (defaults < profile < config file < flags), saved into the run folder
as ``config.json`` and never read from globals afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from embedlab.errors import InputError
from embedlab.schema import FloatRange, IntRange, device_problem, setting, settings_of
from embedlab.vision.registry import REGISTRY

#: The valid names live here, on the ground floor; the studies import them and map each to its code
#: (a test checks that the two agree), so this module never imports a study. The backbones' are the registry's keys
#: (``embedlab.vision.registry`` imports no torch).
SIMILARITY_METRICS = ("cosine", "dot")
OPTIMIZER_NAMES = ("sgd", "nesterov", "adagrad", "rmsprop", "adam")
BACKBONE_NAMES = ("auto", *REGISTRY)  # "auto" chooses one of the registered backbones
RUNTIME_NAMES = ("auto", "torch", "torch-bf16", "onnxruntime", "openvino")

#: Learning-rate grids of the default sweep. Each spans too small (far from the optimum after the
#: budget) to too large (diverges), measured on ml-latest-small at the default d = 100 (docs/results.md, the sweep
#: table).
DEFAULT_GRID: dict[str, list[float]] = {
    "sgd": [3e-6, 1e-5, 3e-5, 1e-4],
    "nesterov": [3e-6, 1e-5, 2e-5, 3e-5],
    "adagrad": [0.03, 0.1, 0.3, 1.0],
    "rmsprop": [0.001, 0.003, 0.01, 0.03],
    "adam": [0.01, 0.1, 0.3, 1.0],
}


#: numpy's and torch's seeds are unsigned 32-bit numbers at most (numpy's legacy generator refuses more).
Seed = IntRange(0, 2**32 - 1)
Pixels = IntRange(32, 512)
TrainPerClass = IntRange(1, 5000)  # CIFAR-10 has 5,000 training images per class
ValPerClass = IntRange(1, 4999)
TestPerClass = IntRange(1, 1000)  # and 1,000 test images per class
Batch = IntRange(1, 50_000)  # no batch is larger than the training set
Epochs = FloatRange(0, 1000)  # passes over the data; a fraction ends the last pass early
Steps = IntRange(1, 100_000)  # optimiser steps or solver iterations of one fit
Dim = IntRange(1, 4096)  # embedding dimensions (also below the number of movies, checked once the data is read)
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # [0, 1)
OpenFraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]  # (0, 1)
GalleryK = IntRange(1, 10)
Strength = FloatRange(0, 1e9, open_low=False)  # an L2 or ridge regularisation strength
# the sweep's rates: SGD's useful ones are tiny, a divergent one may be tried on purpose
LearningRate = FloatRange(0, 1e4)


@dataclass
class DataSettings:
    """Where the data is and whether it may be downloaded: every study has these."""

    data_dir: str | None = setting(
        None,
        resume="apply",
        run=True,
        help="folder holding cifar-10-batches-py/ and ml-latest-small/ (default: $EMBEDLAB_DATA_DIR, else ./data)",
    )
    offline: bool = setting(False, resume="apply", run=True, help="never download; fail if data or weights are missing")
    seed: Seed = setting(
        0,
        run=True,
        help="seed of every random choice: the splits and subsets, the initial embedding, the new head, the data order",
    )


@dataclass
class MoviesConfig(DataSettings):
    """Every knob of the movie-embedding study (Part 2)."""

    allow_modified_data: bool = setting(
        False,
        resume="apply",
        run=True,
        help=(
            "use ml-latest-small files that differ from the official release (recorded in metrics.json and the report)"
        ),
    )
    dataset: str = setting(
        "ml-latest-small",
        help="MovieLens release under --data-dir: ml-latest-small, ml-25m, ml-32m or ml-latest (same CSV layout)",
    )
    synthetic: str | None = setting(
        None,
        help=(
            "generate ratings shaped like ml-25m, ml-32m, ml-latest or Nx ml-latest-small "
            "(e.g. 8x) instead of reading them"
        ),
    )
    like_threshold: Annotated[float, Field(ge=0.5, le=5.0, allow_inf_nan=False)] = setting(
        4.0,
        help="a rating at or above this counts as a like (4 and 5 stars of 0.5-5: a clear like; 3.5 is sensible too)",
    )
    dim: Dim = setting(100, run=True, help="embedding dimension, chosen by held-out HitRate@10 in the dimension sweep")
    iterations: Steps = setting(500, help="gradient steps of each run of the optimiser x learning-rate sweep")
    init_scale: FloatRange(0, 100) = setting(
        0.1, help="standard deviation of the initial embedding's entries (V = 0 is a stationary point)"
    )
    grid: dict[Literal[OPTIMIZER_NAMES], Annotated[list[LearningRate], Field(min_length=1)]] = setting(
        DEFAULT_GRID,
        flag="--optimizers/--lrs",
        help=(
            "the sweep: --optimizers picks a subset (e.g. adam,sgd), --lrs OPT=LR,... sets one optimiser's rates"
            " (repeatable)"
        ),
    )
    divergence_factor: FloatRange(1, 1e12) = setting(
        10.0, help="a run whose cost exceeds this multiple of its start cost has diverged and stops"
    )
    final_iterations: Steps = setting(3000, help="at most this many steps when the best setting is run to convergence")
    final_rel_tol: Fraction = setting(1e-7, help="convergence: the cost falls by less than this fraction over 50 steps")
    converged_gap: FloatRange(0, 1) = setting(
        0.01, help="a run within this fraction of the spectral optimum counts as converged"
    )
    spectral_rounds: IntRange(1, 10_000) = setting(
        50, help="rounds of the block power iteration that computes the exact optimum"
    )
    metric: Literal["cosine", "dot"] = setting("cosine", help="similarity of the recommendations")
    min_likes: IntRange(0, 10_000_000) = setting(10, help="never recommend a movie with fewer likes than this")
    top_k: Annotated[int, Field(ge=1, le=1000)] = setting(
        10, flag="--top", run=True, help="recommendations per query movie"
    )
    queries: list[str] = setting(
        ["Apollo 13", "Toy Story", "Home Alone"],
        flag="--query",
        repeat=True,
        help="a query movie (repeat for several; default Apollo 13, Toy Story and Home Alone)",
    )
    holdout_fraction: OpenFraction = setting(0.2, help="share of the users held out to test the recommendations")
    holdout_seed: Seed = setting(
        0, follows="seed", help="seed of the held-out users (default: --seed when that is given)"
    )
    holdout_max_queries: IntRange(1, 10_000_000) = setting(
        20_000, help="at most this many held-out (user, liked movie) queries, a seeded sample (ml-latest-small: 7.8 k)"
    )
    anchors: list[Literal["ease", "als"]] = setting(
        ["ease", "als"], help="the field's recommenders in the held-out table: ease, als (comma-separated; '' for none)"
    )
    anchor_validation_fraction: OpenFraction = setting(0.2, help="share of the training users that tune EASE and ALS")
    anchor_max_users: IntRange(1, 10_000_000) = setting(
        20_000, help="most tuning users that fit each EASE and ALS candidate (a seeded sample; ml-latest-small has 390)"
    )
    ease_lambdas: Annotated[list[FloatRange(0, 1e9)], Field(min_length=1)] = setting(
        [100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0],
        help="EASE's L2 strengths tried on validation users (they bracket the optimum, about 3,000 on ml-latest-small)",
    )
    ease_max_items: IntRange(0, 50_000) = setting(
        20_000, help="skip EASE above this many movies (its dense M x M inverse)"
    )
    als_factors: Annotated[list[IntRange(1, 1024)], Field(min_length=1)] = setting(
        [32, 64, 128], help="ALS factor counts tried"
    )
    als_regularization: Annotated[list[Strength], Field(min_length=1)] = setting(
        [0.1, 1.0, 10.0], help="ALS regularisation strengths tried"
    )
    als_alpha: Annotated[list[FloatRange(0, 1e6)], Field(min_length=1)] = setting(
        [1.0, 10.0], help="ALS confidence of a like (Hu et al.'s alpha) tried"
    )
    als_iterations: IntRange(1, 1000) = setting(15, help="ALS sweeps of each fit")
    dim_sweep: list[Dim] = setting(
        [10, 25, 50, 100, 200], help="dimensions compared on held-out users ('' skips the sweep)"
    )
    dim_sweep_lr_steps: IntRange(0, 20) = setting(
        3, help="at each dimension, lower the learning rate 3x at most this often until a run converges"
    )
    embedding_map: bool = setting(True, flag="--map", help="draw the 2-D map of the embedding (--no-map skips it)")
    map_method: Literal["tsne", "pca"] = setting("tsne", help="how the map is drawn")
    map_max_movies: IntRange(2, 50_000) = setting(
        5000, help="the map shows at most this many most-liked movies (t-SNE's cost)"
    )

    def validate(self) -> None:
        """What the field types cannot say: a grid and a query at least, a known dataset, a synthetic shape that
        parses."""
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
                problems.append(
                    f"--synthetic {self.synthetic} generates its ratings, so --dataset {self.dataset} would be ignored;"
                    " give one of the two"
                )
        if not self.queries:
            problems.append("no query movies: give at least one --query")
        problems += [
            f"--query {q!r} is not a title: give a movie's title, e.g. --query 'Toy Story'"
            for q in self.queries
            if not q.strip()
        ]
        if problems:
            raise InputError("invalid movies config:\n  " + "\n  ".join(problems))


@dataclass
class VisionSettings(DataSettings):
    """What the linear probe and fine-tuning share: the network, the split and where features are cached."""

    backbone: str = setting(
        "auto",
        run=True,
        help=(
            "auto (resnet18 when its ImageNet weights are cached, given or downloadable, "
            "else efficientnet_lite1), resnet18 (torchvision's ImageNet weights), or efficientnet_lite0, "
            "efficientnet_lite1 or efficientnet_lite2 (ImageNet weights offline, from pip packages)"
        ),
    )
    weights: str = setting(
        "imagenet",
        run=True,
        help="imagenet, none (random start) or a local state-dict file (e.g. resnet18-f37072fd.pth)",
    )
    device: str = setting(
        "auto", resume="apply", run=True, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
    )
    runtime: Literal[RUNTIME_NAMES] = setting(
        "auto",
        run=True,
        help=(
            "what runs the passes that only predict (the probe's features, validation, test): auto (on a CPU "
            "openvino, measured fastest there, else onnxruntime; else torch), torch, torch-bf16 (CPUs with bf16 "
            "instructions), onnxruntime or openvino"
        ),
    )
    val_per_class: ValPerClass = setting(
        500, help="validation images per class, carved from the 50,000 training images"
    )
    train_per_class: TrainPerClass | None = setting(
        None, help="use at most this many training images per class (default: all)"
    )
    test_per_class: TestPerClass | None = setting(
        None, help="use at most this many test images per class (default: all)"
    )
    gallery_k: GalleryK = setting(
        5, help="images per class and kind in the galleries of confident right and wrong predictions"
    )
    cache_dir: str | None = setting(
        None, resume="apply", run=True, help="feature cache (default: $EMBEDLAB_CACHE_DIR, else ~/.cache/embedlab)"
    )


@dataclass
class ProbeConfig(VisionSettings):
    """Every knob of the linear-probe study (Part 1 A and B)."""

    size: Pixels | None = setting(
        None, help="input resolution in pixels (default: the backbone's native size on a GPU, --cpu-size on a CPU)"
    )
    cpu_size: Pixels = setting(128, help="resolution on a CPU when --size is not given")
    batch_size: Batch | None = setting(
        None, help="extraction batch (default: 16 on a CPU, 128 on a GPU); it does not change the features"
    )
    l2_grid: Annotated[list[Strength], Field(min_length=1)] = setting(
        [1e-3, 1e-2, 1e-1, 1.0], help="L2 strengths tried on the validation split (comma-separated)"
    )
    max_iter: Steps = setting(200, help="L-BFGS iterations of the probe's fit")

    def validate(self) -> None:
        """What the field types cannot say: the device is usable here, the backbone is known."""
        problems = [p for p in [device_problem(self.device)] if p]
        if self.backbone not in BACKBONE_NAMES:
            problems.append(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONE_NAMES)}")
        if problems:
            raise InputError("invalid probe config:\n  " + "\n  ".join(problems))


@dataclass
class FinetuneConfig(VisionSettings):
    """Every knob of the fine-tuning study (Part 1 C). ``None`` sizes resolve by device (see ``resolve``)."""

    size: Pixels | None = setting(
        None, help="training and test resolution in pixels (default: 224 on a GPU, --cpu-size on a CPU)"
    )
    cpu_size: Pixels = setting(112, help="resolution on a CPU when --size is not given")
    test_size: Pixels | None = setting(
        None,
        help=(
            "validation and test resolution (default: --size); another one first recomputes the trained layers' "
            "batch-norm statistics at it (FixRes: train lower, test higher)"
        ),
    )
    epochs: Epochs = setting(
        1.75,
        run=True,
        help="passes over the training images; a fraction such as 1.75 trains that share of the last pass's batches",
    )
    batch_size: Batch = setting(64, help="training batch size")
    eval_batch_size: Batch | None = setting(
        None,
        help="validation and test batch size (default: 16 on a CPU, 256 on a GPU); it does not change the predictions",
    )
    optimizer: Literal["sgd", "adamw"] = setting("adamw", help="adamw, or sgd with Nesterov momentum")
    lr: FloatRange(0, 100) = setting(0.001, help="peak learning rate of the new head")
    backbone_lr_scale: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = setting(
        1.0, help="backbone learning rate = --lr x this, in (0, 1] (e.g. 0.1 keeps the pretrained features closer)"
    )
    momentum: Fraction = setting(0.9, help="SGD's momentum (with --optimizer sgd)")
    weight_decay: FloatRange(0, 1, open_low=False) = setting(
        5e-4, help="on weights only, never on norm or bias parameters"
    )
    label_smoothing: Fraction = setting(0.1, help="label smoothing of the training loss; 0 turns it off")
    validation: Literal["auto", "epoch", "end"] = setting(
        "auto",
        help=(
            "validate after every epoch, or at the end only (the schedule never reads it; a pass costs as much as "
            "the test's); auto: the end on a CPU, every epoch on a GPU"
        ),
    )
    tta_flip: bool = setting(
        True, help="average each validation and test image's prediction with its mirror image's (2 passes)"
    )
    tta_shifts: IntRange(0, 2) = setting(
        1,
        help=(
            "also average over each validation and test image moved one pixel diagonally: 1 one way (4 passes with "
            "the mirror images), 2 both ways (6 passes); 0: no shifts"
        ),
    )
    start_size: Pixels | None = setting(
        None, help="progressive resizing: the first epoch's resolution, rising linearly to --size"
    )
    ema: Fraction = setting(
        0.0,
        help=(
            "evaluate an exponential moving average of the weights; its time constant as a fraction "
            "of all training steps, e.g. 0.1 (0: off)"
        ),
    )
    head_init: Literal["auto", "random", "probe"] = setting(
        "auto",
        help=(
            "the new classifier's start: probe (the linear probe's weights, LP-FT), random, or auto: probe when the "
            "run folder holds one"
        ),
    )
    warmup_fraction: Fraction = setting(0.1, help="share of the steps spent warming the learning rate up linearly")
    schedule: Literal["cosine", "onecycle"] = setting("cosine", help="after the warm-up: cosine to zero, or one-cycle")
    pad: Annotated[int, Field(ge=0, le=16)] = setting(
        4, help="random-crop augmentation: padding in pixels at 32 px, see --pad-mode (0: flips only)"
    )
    pad_mode: Literal["zeros", "reflect"] = setting(
        "zeros", help="the random crop's padding: zeros, or the image reflected at its border"
    )
    flip: Literal["random", "alternate"] = setting(
        "random",
        help="training flips: a coin toss per image and epoch, or alternate: drawn once, then the other way each epoch",
    )
    train_scope: Literal["all", "last"] = setting("all", help="all layers, or the last stage and the head only")
    freeze_stages: IntRange(0, 16) | None = setting(
        None,
        help=(
            "with --train-scope all: keep the stem and the stages after it, "
            "K in all, frozen (default: none on a GPU; on a CPU the backbone's own, 3 for "
            "efficientnet_lite1, 4 for lite2, else 0)"
        ),
    )
    probe: bool = setting(
        True, help="also run the linear probe in the same run folder, for the comparison (--no-probe skips it)"
    )
    probe_size: Pixels | None = setting(
        None, help="resolution of the comparison probe (default: its own, 128 px on a CPU)"
    )

    def validate(self) -> None:
        """What the field types cannot say: the device is usable here, the backbone is known, settings that go
        together."""
        problems = [p for p in [device_problem(self.device)] if p]
        if self.backbone not in BACKBONE_NAMES:
            problems.append(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONE_NAMES)}")
        if self.freeze_stages and self.train_scope == "last":
            problems.append(
                "--freeze-stages goes with --train-scope all (--train-scope last already freezes all but the last"
                " stage)"
            )
        if self.head_init == "probe" and not self.probe:
            problems.append("--head-init probe needs the linear probe; drop --no-probe")
        if problems:
            raise InputError("invalid finetune config:\n  " + "\n  ".join(problems))

    def probe_config(self) -> ProbeConfig:
        """The linear probe the fine-tuned model is compared with: same data, split, backbone and weights."""
        return ProbeConfig(**{f.name: getattr(self, f.name) for f in settings_of(VisionSettings)}, size=self.probe_size)
