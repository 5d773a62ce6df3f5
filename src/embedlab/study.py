"""The main job (``embedlab run``): Part 1 A-C and Part 2 A-C into one run folder, step by step, resumable.

Each step records itself in metrics.json (``steps``) when it finishes, so ``--resume`` skips finished
steps and continues an interrupted fine-tuning from its last epoch checkpoint. A failing step stops the
job with its own message; everything finished stays on disk.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from embedlab.config import FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.distributed import PeerFailed, current
from embedlab.environment import software_versions
from embedlab.errors import InputError, MissingFileError, UserError, failure_text
from embedlab.overrides import apply_overrides, flag_name, to_dict, without_derived
from embedlab.profiles import PROFILE_ALIASES, PROFILE_NAMES, profile_overrides, resolve_profile
from embedlab.results import RunResults, Steps, StepStatus
from embedlab.runs import RunDir
from embedlab.schema import settings_of, with_followers

if TYPE_CHECKING:
    from embedlab.store import Store
    from embedlab.vision.registry import BackboneChoice

log = logging.getLogger(__name__).info
T = TypeVar("T")


@dataclass(frozen=True)
class StepJob:
    """What a step of the main job runs with: the job's settings, the run folder's store, whether it resumes, the
    backbone chosen for each vision step, and the results so far (those of earlier steps as this process has them)."""

    cfg: StudyConfig
    store: Store
    resume: bool
    choices: dict[str, BackboneChoice]
    results: RunResults


@dataclass(frozen=True)
class MainStep:
    """One step of the main job: the plan's line for it, its wall time measured on the 2-core CPU machines per profile
    (for the plan; a step without one times itself when it starts), what the preflight checks before anything starts,
    what a resume checks first, and the step itself. Declared once, on the ``StudyConfig`` field that holds its
    settings (``main_step``)."""

    what: Callable[[StudyConfig, str], str]  # the plan's line, given the backbone chosen for the step ("" for none)
    run: Callable[[StepJob], RunResults]
    minutes: dict[str, tuple[float, float]] = field(default_factory=dict)
    data: Callable[[Any], None] | None = None  # raises MissingFileError when its dataset is not at hand
    ready: Callable[[Any, BackboneChoice], None] | None = None  # its network's weights at hand, its batches possible
    on_resume: Callable[[Any, RunResults, Path], None] | None = None  # refuses a resume that would mix inputs
    vision: bool = False  # it runs a backbone (``--backbone auto`` is decided for it)


def main_step(
    settings: Callable[[], Any],
    what: Callable[[StudyConfig, str], str],
    run: Callable[[StepJob], RunResults],
    **more: Any,
) -> Any:
    """A ``StudyConfig`` field that is a step of the main job: its settings' defaults in the main job, and the step
    (``MainStep``'s fields); the field's name is the step's, its place in the class the step's place in the job."""
    return field(default_factory=settings, metadata={"step": MainStep(what, run, **more)})


def _cifar10(c: ProbeConfig | FinetuneConfig) -> None:
    from embedlab.data import resolve_data_dir
    from embedlab.vision.cifar10 import ensure_cifar10, torchvision_download

    ensure_cifar10(resolve_data_dir(c.data_dir), None if c.offline else torchvision_download)


def _movielens(c: MoviesConfig) -> None:
    from embedlab.data import download_url, ensure_movielens, resolve_data_dir

    if not c.synthetic:
        ensure_movielens(resolve_data_dir(c.data_dir), None if c.offline else download_url, c.dataset)


def _backbone_ready(c: ProbeConfig | FinetuneConfig, choice: BackboneChoice) -> Any:
    from embedlab.vision.backbones import create_backbone

    return create_backbone(choice.name, c.weights, c.seed)


def _finetune_ready(c: FinetuneConfig, choice: BackboneChoice) -> None:
    from embedlab.vision.features import pick_device
    from embedlab.vision.registry import check_freeze_stages
    from embedlab.vision.steps_1c import check_finetune_batches

    backbone = _backbone_ready(c, choice)
    if c.freeze_stages is not None:
        check_freeze_stages(backbone.spec, c.freeze_stages)
    check_finetune_batches(c, backbone.spec, pick_device(c.device))


def _run_probe(job: StepJob) -> RunResults:
    from embedlab.vision.pipeline import run_probe

    return RunResults(probe=on_main_rank(lambda: run_probe(job.cfg.probe, job.store, job.choices["probe"])))


def _run_finetune(job: StepJob) -> RunResults:
    from embedlab.vision.pipeline import run_finetune

    choice, probe = job.choices.get("finetune"), job.results.probe  # the probe as this process has it
    return RunResults(finetune=run_finetune(job.cfg.finetune, job.store, job.resume, False, choice, probe))


def _run_movies(job: StepJob) -> RunResults:
    from embedlab.movies.pipeline import run_movies

    return run_movies(job.cfg.movies, job.store.write)


def _same_movie_data(c: MoviesConfig, results: RunResults, path: Path) -> None:
    from embedlab.movies.pipeline import check_same_data

    check_same_data(c, results, path)


@dataclass
class StudyConfig:
    """One typed config for the whole job; ``config.json`` holds these sections. Each field made by ``main_step`` is a
    step of the job, in the order the fields are declared: adding a step is adding its field here."""

    profile: str = "auto"
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    probe: ProbeConfig = main_step(
        ProbeConfig,
        lambda cfg, net: f"1A+1B linear probe on frozen {net} features, galleries",
        _run_probe,
        data=_cifar10,
        ready=_backbone_ready,
        vision=True,
    )
    finetune: FinetuneConfig = main_step(
        lambda: FinetuneConfig(probe=False),  # the main job runs its probe itself
        lambda cfg, net: f"1C fine-tune {net} ({cfg.finetune.epochs:g} epochs), galleries, comparison",
        _run_finetune,
        data=_cifar10,
        ready=_finetune_ready,
        vision=True,
    )
    movies: MoviesConfig = main_step(
        MoviesConfig,
        lambda cfg, net: "2A-2C co-like matrix, optimiser x learning-rate sweep, recommendations, held-out check",
        _run_movies,
        # the fastest and slowest 2-core machines measured (docs/results.md, "The main job"); the vision steps time a
        # few batches on this machine when they start: the one estimate their progress lines use too
        minutes={"cpu": (1.4, 4.7), "smoke": (0.2, 1.0)},
        data=_movielens,
        on_resume=_same_movie_data,
    )

    def validate(self) -> None:
        bad = [s for s in self.steps if s not in STEPS]
        if bad or not self.steps:
            raise InputError(f"unknown or no steps {bad or self.steps}; choose from {', '.join(STEPS)}")
        if len(set(self.steps)) != len(self.steps):
            raise InputError(f"--steps names a step twice ({','.join(self.steps)}); each step runs once per folder")
        if self.profile not in PROFILE_NAMES:
            raise InputError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILE_NAMES)}")
        for step in STEPS:
            getattr(self, step).validate()


#: The main job's steps by name, in the order they run.
STEP: dict[str, MainStep] = {
    f.name: f.metadata["step"] for f in dataclasses.fields(StudyConfig) if "step" in f.metadata
}
STEPS = tuple(STEP)


def study_config(
    profile: str, cuda: bool, shared: dict[str, Any], sections: dict[str, dict[str, Any]] | None = None
) -> StudyConfig:
    """Defaults < profile < config-file ``sections`` < ``shared`` flags (data dir, backbone, ...) applied to every
    study."""
    if not isinstance(profile, str) or profile not in (*PROFILE_NAMES, *PROFILE_ALIASES):
        raise InputError(f"unknown profile {profile!r}; choose from {', '.join(PROFILE_NAMES)}")
    resolved = resolve_profile(profile, cuda)
    sections = sections or {}
    studies = {f.name: f.default_factory() for f in dataclasses.fields(StudyConfig) if f.name in STEP}
    for name, cfg in list(studies.items()):
        cfg = apply_overrides(cfg, profile_overrides(resolved, name, cuda))
        cfg = apply_overrides(cfg, without_derived(sections.get(name, {})), name)
        mine = {f.name for f in settings_of(type(cfg))}  # a shared flag reaches every study that has the setting
        studies[name] = apply_overrides(
            cfg, with_followers(type(cfg), {k: v for k, v in shared.items() if k in mine}), flags=True
        )
    # an explicit empty list is an error, not "all"
    steps = shared["steps"] if "steps" in shared else sections.get("steps", STEPS)
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, str) for s in steps):
        raise InputError(f"steps must be a list of step names from {', '.join(STEPS)} (got {steps!r})")
    cfg = StudyConfig(profile=resolved, steps=list(steps), **studies)
    cfg.validate()
    unread = unread_flags(studies, shared, cfg.steps)
    if unread:
        raise InputError("; ".join(unread))
    return cfg


def unread_flags(studies: dict[str, Any], shared: dict[str, Any], steps: Any) -> list[str]:
    """Why each flag in ``shared`` would be accepted and never read: no step in ``steps`` has that setting
    (``--epochs`` with ``--steps movies``). A config file's sections are not checked: a run's config.json holds every
    study."""
    out = []
    for key in shared:
        owners = [name for name, cfg in studies.items() if key in {f.name for f in settings_of(type(cfg))}]
        if owners and not set(owners) & set(steps):
            flag = flag_name(key, type(studies[owners[0]]))
            out.append(
                f"{flag} is a setting of the {' and '.join(owners)} step{'s' if len(owners) > 1 else ''}, which "
                f"--steps {','.join(steps)} does not run; drop {flag}, or add {owners[0]} to --steps"
            )
    return out


def backbone_choices(cfg: StudyConfig) -> dict[str, BackboneChoice]:
    """The network each vision step of ``cfg`` will use (``--backbone auto`` decided once, for the plan, the preflight
    and the steps)."""
    from embedlab.vision.registry import choose_backbone

    vision = {s: getattr(cfg, s) for s in cfg.steps if STEP[s].vision}
    return {s: choose_backbone(c.backbone, c.weights, c.offline) for s, c in vision.items()}


def plan(cfg: StudyConfig, done: set[str], choices: dict[str, BackboneChoice]) -> list[tuple[str, str, str]]:
    """(step, what, expected time) rows printed before anything starts."""
    rows = []
    for s in cfg.steps:
        step = STEP[s]
        what = step.what(cfg, choices[s].name if s in choices else "")
        if s in done:
            rows.append((s, what, "done"))
        elif cfg.profile in step.minutes:
            rows.append((s, what, "{:g}-{:g} min (2-core machines)".format(*step.minutes[cfg.profile])))
        else:  # a vision step times a few batches on this machine when it starts: one estimate, said once
            rows.append((s, what, "printed when the step starts"))
    return rows


def log_backbone_choice(choices: dict[str, BackboneChoice], pending: list[str]) -> None:
    """One line of the plan when ``--backbone auto`` chose the network: which one, and why."""
    vision = [s for s in pending if s in choices]
    if vision and (choice := choices[vision[0]]).reason:
        log(f"  backbone: auto -> {choice.name}: {choice.reason}")


def preflight(cfg: StudyConfig, pending: list[str], choices: dict[str, BackboneChoice]) -> None:
    """Fail in seconds, not after an hour: the data and the pretrained weights of every pending step must be at hand."""
    data = {}  # each dataset once, with the settings of the first pending step that reads it
    for s in pending:
        if STEP[s].data is not None:
            data.setdefault(STEP[s].data, getattr(cfg, s))
    missing: list[str] = []  # every missing dataset named at once, not one per try
    for check, section in data.items():
        try:
            check(section)
        except MissingFileError as exc:
            missing.append(str(exc))
    if missing:
        raise MissingFileError("; and ".join(m.rstrip(".") for m in missing))
    for s in pending:
        if STEP[s].ready is not None:
            STEP[s].ready(getattr(cfg, s), choices[s])  # the weights, or how to get them
    log("preflight: data and weights are at hand")


def check_inputs(cfg: StudyConfig) -> None:
    """Before a new run folder is made: every input of every step at hand (``preflight``), so that missing data
    creates nothing."""
    preflight(cfg, list(cfg.steps), backbone_choices(cfg))


def record_settings(store: Store, cfg: StudyConfig) -> None:
    """Every value, before any work (--resume and --config restore exactly this), and the software and machine."""
    store.settings("study", {"profile": cfg.profile, "steps": cfg.steps})
    for name in STEPS:
        store.settings(name, {**store.saved_settings(name), **to_dict(getattr(cfg, name))})
    store.write_environment(software_versions())


def run_study(cfg: StudyConfig, run: RunDir, resume: bool = False) -> RunResults:
    """Run the configured steps in order; finished steps are skipped on resume. Returns every result of the run: those
    this call computed, as the steps returned them, beside those a resumed run had finished before.

    Under torchrun every rank calls this: fine-tuning and the movie study use all ranks, the linear probe
    runs on rank 0 while the others wait, and rank 0's folder decides which steps are done.
    """
    from embedlab.report import write_report
    from embedlab.store import Store
    from embedlab.vision.pipeline import run_comparison

    store = Store(run)
    results = store.results()  # what a resumed run finished before; empty for a new one
    for s in cfg.steps if resume else []:  # before config.json takes the new --data-dir
        if (check := STEP[s].on_resume) is not None:
            check(getattr(cfg, s), results, run.path)
    record_settings(store, cfg)
    dist = current()
    done = set(dist.broadcast_object(sorted(results.steps.done())))  # type: ignore[arg-type]
    choices = backbone_choices(cfg)
    log(f"plan ({cfg.profile} profile; a range is the fastest and slowest 2-core machine measured, docs/results.md):")
    for step, what, eta in plan(cfg, done, choices):
        log(f"  {step:<9} {eta:<36} {what}")
    pending = [s for s in cfg.steps if s not in done]
    log_backbone_choice(choices, pending)
    preflight(cfg, pending, choices)
    for step in pending:
        t0 = time.perf_counter()
        store.step(step, StepStatus("running"))
        try:
            results = updated(results, STEP[step].run(StepJob(cfg, store, resume, choices, results)))
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                store.step(step, StepStatus(status, error=failure_text(exc)))
                if dist.is_main:
                    write_report(run)  # whatever finished is readable right away
            except (OSError, UserError):  # e.g. the disk is full: the error being raised says so already
                pass
            raise
        status = StepStatus("done", seconds=round(time.perf_counter() - t0, 1))
        store.step(step, status)
        results = updated(results, RunResults(steps=Steps({**results.steps.steps, step: status})))
        if not dist.is_main:
            continue
        if step in ("probe", "finetune") and {"probe", "finetune"} <= results.steps.done():
            assert results.probe is not None and results.finetune is not None  # both steps are done
            results = updated(results, RunResults(comparison=run_comparison(store, results.probe, results.finetune)))
        write_report(run)
    return results


def updated(results: RunResults, new: RunResults) -> RunResults:
    """``results`` with every section ``new`` holds (a step's results replace that step's earlier ones)."""
    sections = {f.name: v for f in dataclasses.fields(new) if (v := getattr(new, f.name)) is not None}
    if not new.steps.steps:  # ``new`` says nothing of the steps
        del sections["steps"]
    return dataclasses.replace(results, **sections)


def on_main_rank(work: Callable[[], T]) -> T | None:
    """``work()`` on rank 0 alone while the others wait (its value on rank 0, None on the others); if it fails, every
    rank stops (rank 0 with its error)."""
    problem: BaseException | None = None
    value = None
    dist = current()
    if dist.is_main:
        try:
            value = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the other ranks learn of it
            problem = exc
    if not dist.agree(problem is None):
        raise problem if problem is not None else PeerFailed("rank 0 failed in this step; its message says why")
    return value
