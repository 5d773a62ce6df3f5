"""What each study step found, as frozen dataclasses: the sections of ``metrics.json`` and the run folder's typed view.

Every step returns one of these (inside its ``store.Output``); ``store`` writes them into their sections of
``metrics.json`` (one JSON object per study step, the file users read with ``jq``) and reads the whole file back as a
typed ``RunResults``, which is all the report and the comparison read. A result type also declares, in ``FILES``, the
tables, figures and artefacts its step comes with. Two storage rules keep ``metrics.json`` flat and readable:

- a field whose value is itself a dataclass listed in ``INLINE`` (``Evaluation`` in the probe's and the fine-tuned
  network's results) is stored as its fields, side by side with the others;
- a field marked ``spread`` (a name → row mapping such as the held-out table's methods) is stored as one key per item;
- a field left at its default None is not stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Files:
    """The tables, figures and artefacts a step's result declares, by name, for output, store and report alike."""

    tables: tuple[str, ...] = ()  # "{query}" in a name stands for any text (one table per query)
    figures: tuple[str, ...] = ()
    artefacts: tuple[str, ...] = ()
    floatfmt: Mapping[str, str] = field(default_factory=dict)  # a table's format where not ".4g" (markdown_table)

    def allows(self, kind: str, name: str) -> bool:
        return any(
            re.fullmatch(re.sub(r"\\\{\w+\\\}", ".+", re.escape(pattern)), name) for pattern in getattr(self, kind)
        )

    def table_format(self, name: str) -> str:
        """The number format of table ``name``, as its step declared it: the Markdown copy and the report use it."""
        return self.floatfmt.get(name, ".4g")

    @staticmethod
    def union(many: Iterable[Files]) -> Files:
        many = list(many)
        lists = (tuple(n for f in many for n in getattr(f, kind)) for kind in ("tables", "figures", "artefacts"))
        return Files(*lists, floatfmt={k: v for f in many for k, v in f.floatfmt.items()})


def files_of(cls: type) -> Files:
    """What ``cls`` declares it comes with (nothing, for a result without files)."""
    return getattr(cls, "FILES", Files())


def spread(**kwargs: Any) -> Any:
    """A mapping field stored as one key per item of its section (``metrics.json`` keeps its established shape)."""
    return field(metadata={"spread": True}, **kwargs)


@dataclass(frozen=True)
class Evaluation:
    """One model's test evaluation: accuracy and per-class accuracy (the confusion matrix is a table)."""

    test_accuracy: float
    per_class_accuracy: dict[str, float]


# --- Part 1 ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSummary:
    """1A, first half: the frozen backbone, the images it saw and how fast it extracted them."""

    backbone: str
    weights: str
    weights_digest: str
    resolution: int
    device: str
    feature_dim: int
    mean: list[float]
    std: list[float]
    train_images: int
    val_images: int
    test_images: int
    features_cached: bool
    backbone_choice: str | None = None  # why --backbone auto chose this backbone; None when the user named it
    runtime: str | None = None  # what ran the extraction (--runtime); None: torch, in runs made before the choice
    extract_train_seconds: float | None = None  # None: the features came from a cache without timings
    extract_train_images_per_second: float | None = None
    extract_test_seconds: float | None = None
    extract_test_images_per_second: float | None = None


@dataclass(frozen=True)
class ProbeScores:
    """1A, second half: the chosen L2, the accuracies, and the fit's cost."""

    INLINE: ClassVar[tuple[str, ...]] = ("evaluation",)

    l2: float
    train_accuracy: float
    val_accuracy: float
    evaluation: Evaluation
    fit_seconds: float
    trainable_parameters: int
    probe_iterations: int


@dataclass(frozen=True)
class ProbeResult:
    """Part 1 A and B of one run: features, fit, and the whole step's time."""

    SECTION: ClassVar[str] = "probe"
    FILES: ClassVar[Files] = Files(
        tables=("probe_l2_grid", "probe_per_class", "probe_confusion", "probe_gallery"),
        figures=("probe_l2_grid", "probe_training_curve", "probe_confusion", "probe_gallery"),
        artefacts=(
            "probe_test_probs.npz",
            "probe_model.pt",
            "probe_model_train_only.pt",
            "probe_view_images.npz",
            "feature_cache.txt",
        ),
    )
    INLINE: ClassVar[tuple[str, ...]] = ("features", "fit")

    features: FeatureSummary
    fit: ProbeScores
    total_seconds: float


@dataclass(frozen=True)
class FinetuneResult:
    """Part 1 C: the recipe as it ran, the fine-tuned network's evaluation and what the training cost."""

    SECTION: ClassVar[str] = "finetune"
    FILES: ClassVar[Files] = Files(
        tables=("finetune_epochs", "finetune_per_class", "finetune_confusion", "finetune_gallery"),
        figures=("finetune_curves", "finetune_confusion", "finetune_gallery"),
        artefacts=("finetune_test_probs.npz", "finetune_view_images.npz", "finetune_checkpoint.pt"),
    )
    INLINE: ClassVar[tuple[str, ...]] = ("evaluation",)

    backbone: str
    weights: str
    weights_digest: str
    resolution: int
    device: str
    train_scope: str
    frozen_stages: list[str]
    trainable_parameters: int
    total_parameters: int
    train_images: int
    val_images: int
    test_images: int
    epochs: float
    start_size: int | None
    ema: float | None
    head_init: str
    train_pixels: int
    steps: int
    val_accuracy: float
    best_epoch_val_accuracy: float
    evaluation: Evaluation
    tta_flip: bool
    test_accuracy_one_view: float
    train_seconds: float
    train_images_per_second: float
    val_seconds: float
    test_images_per_second: float
    expected_seconds: float
    bare_train_images_per_second: float
    processes: int
    batch_per_process: int
    total_seconds_this_session: float
    backbone_choice: str | None = None  # why --backbone auto chose this backbone; None when the user named it
    runtime: str | None = None  # what ran validation and test (--runtime); None: torch, in runs made before the choice
    tta_shifts: int = 0  # the test-time shifts (recipe.tta_views); 0 in runs made before they existed


@dataclass(frozen=True)
class Comparison:
    """Fixed features vs fine-tuning, from the two results above."""

    SECTION: ClassVar[str] = "comparison"
    FILES: ClassVar[Files] = Files(
        tables=("comparison", "comparison_per_class", "comparison_changes"),
        figures=("comparison_per_class",),
        floatfmt={"comparison_changes": ".3g"},
    )

    accuracy_gain: float
    error_reduction: float
    classes_improved: int
    paired_images: int | None = None  # test images both models were evaluated on (None: no saved probabilities)
    fixed: int | None = None  # of those, the probe wrong and fine-tuning right
    broken: int | None = None  # right under the probe, wrong after fine-tuning
    both_wrong: int | None = None
    mcnemar_p: float | None = None  # exact two-sided McNemar test of fixed against broken


# --- Part 2 ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataStats:
    """2A: the ratings, the likes L and what one chunked pass found of X."""

    SECTION: ClassVar[str] = "movies_data"
    FILES: ClassVar[Files] = Files(tables=("colike_top_pairs", "query_likes"), artefacts=("items.csv", "catalogue.csv"))

    like_threshold: float
    users: int
    movies_in_catalogue: int
    movies_rated: int
    ratings: int
    likes: int
    users_with_likes: int
    movies_with_likes: int
    x_nnz: int
    x_density: float
    x_max: int
    x_sum_pairs: int
    x_fro_sq: float
    source: str
    build_seconds: float
    x_summary_seconds: float
    query_likes: dict[str, int]  # resolved query title -> its like count
    # the data read (ratings.csv, movies.csv); empty when generated
    files_sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """One converged sweep setting run on to convergence."""

    optimizer: str
    lr: float
    iterations: int
    gap: float


@dataclass(frozen=True)
class FitSummary:
    """2B: the spectral optimum, the sweep's best run and the run to convergence that recommends."""

    SECTION: ClassVar[str] = "movies_fit"
    FILES: ClassVar[Files] = Files(
        tables=("sweep", "spectral_rounds"),
        figures=("loss_by_optimizer", "loss_best_runs"),
        artefacts=("embeddings.npz", "loss_histories.csv"),
    )

    dim: int
    iterations: int
    cost_at_zero: float
    cost_at_init: float
    spectral_cost: float
    spectral_rounds: int
    spectral_converged: bool
    spectral_relative_cost: float
    best_optimizer: str
    best_lr: float
    best_cost: float
    best_gap_to_optimum: float
    runs: int
    final_optimizer: str
    final_lr: float
    final_iterations: int
    final_gap_to_optimum: float
    final_seconds: float
    final_candidates: list[Candidate]
    seconds_per_iteration: float
    spectral_seconds: float
    sweep_seconds: float
    runs_diverged: int
    runs_converged: int
    processes: int


@dataclass(frozen=True)
class Recommendations:
    """2C: the strategy and every query's top list (titles), by the configured metric."""

    SECTION: ClassVar[str] = "movies_recommend"
    FILES: ClassVar[Files] = Files(tables=("recs_{query}", "recs_{other_metric}_{query}"))

    metric: str
    min_likes: int
    eligible_movies: int
    query_titles: dict[str, str]  # query as typed -> the catalogue title it resolved to, in query order
    top: dict[str, list[str]]  # resolved title -> recommended titles, best first
    mean_likers: dict[str, dict[str, float]]  # metric ("cosine", "dot") -> resolved title -> mean likes of its list


@dataclass(frozen=True)
class Stability:
    """2C: how far each run's top lists agree with the recommending embedding's."""

    SECTION: ClassVar[str] = "movies_stability"
    FILES: ClassVar[Files] = Files(tables=("stability",), floatfmt={"stability": ".3g"})

    converged_runs: int
    converged_mean_jaccard: float | None
    converged_min_jaccard: float | None
    converged_mean_rank_corr: float | None
    not_converged_runs: int
    not_converged_mean_jaccard: float | None
    spectral_jaccard: float
    diverged_runs: int


@dataclass(frozen=True)
class Holdout:
    """Held-out users: every method's scores (one row per method, as in the held-out table)."""

    SECTION: ClassVar[str] = "movies_holdout"
    FILES: ClassVar[Files] = Files(tables=("holdout", "anchor_tuning"))

    refit_status: str
    queries_total: int
    anchor_notes: list[str]
    # method -> {metric: value}; "queries" is how many were scored
    methods: dict[str, dict[str, float | None]] = spread()


@dataclass(frozen=True)
class ColdStart:
    """The held-out scores split by the query movie's like count among the training users."""

    SECTION: ClassVar[str] = "movies_cold_start"
    FILES: ClassVar[Files] = Files(tables=("cold_start",))

    buckets: dict[str, dict[str, dict[str, float | None]]] = spread()  # bucket ("< 10") -> method -> {metric: value}


@dataclass(frozen=True)
class DimChoice:
    """The dimension sweep's verdict: the d the held-out rule picks, and the d this run used."""

    SECTION: ClassVar[str] = "movies_dim_sweep"
    FILES: ClassVar[Files] = Files(tables=("dim_sweep",), figures=("dim_sweep",))

    chosen_by_rule: int
    configured_dim: int


@dataclass(frozen=True)
class MoviesRun:
    """The movie study as a whole: its time, or why it stopped."""

    SECTION: ClassVar[str] = "movies_run"
    # the map has no section of its own
    FILES: ClassVar[Files] = Files(figures=("embedding_map",), artefacts=("map_coords.csv",))

    total_seconds: float | None = None
    processes: int | None = None
    peak_rss_gib: float | None = None
    status: str | None = None  # "failed: …" or "interrupted: …" while the study has not finished


@dataclass(frozen=True)
class StepStatus:
    """One step of ``embedlab run``: running, done (with its time), failed or interrupted (with why)."""

    status: str
    seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Steps:
    """The steps of ``embedlab run`` in the order they started."""

    SECTION: ClassVar[str] = "steps"

    steps: dict[str, StepStatus] = spread(default_factory=dict)

    def done(self) -> set[str]:
        return {name for name, s in self.steps.items() if s.status == "done"}


@dataclass(frozen=True)
class RunResults:
    """Everything a run folder holds, typed; a step that has not finished is None."""

    probe: ProbeResult | None = None
    finetune: FinetuneResult | None = None
    comparison: Comparison | None = None
    movies_data: DataStats | None = None
    movies_fit: FitSummary | None = None
    movies_recommend: Recommendations | None = None
    movies_stability: Stability | None = None
    movies_holdout: Holdout | None = None
    movies_cold_start: ColdStart | None = None
    movies_dim_sweep: DimChoice | None = None
    movies_run: MoviesRun | None = None
    steps: Steps = field(default_factory=Steps)

    @property
    def has_movies(self) -> bool:
        return self.movies_run is not None or self.movies_data is not None
