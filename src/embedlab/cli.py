"""The command line: flags generated from the settings' declarations -> typed configs -> the studies -> short summaries.

Every expected failure (missing data, bad flag, unknown title, existing run folder) ends with
one readable ``embedlab: error: ...`` message and exit status 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from embedlab.config import (CONFIG_KEYS, DEFAULT_GRID, PROFILE_ALIASES, PROFILE_NAMES, PROFILES, STUDY_SECTIONS, FinetuneConfig, MoviesConfig,
                             ProbeConfig, apply_overrides, check_sections, flag_of, load_config_file, profile_overrides, range_text, settings_of,
                             with_followers)
from embedlab.distributed import PeerFailed, current
from embedlab.errors import InputError, UserError, failure_text
from embedlab.files import NO_SPACE, disk_full
from embedlab.logs import console, run_log
from embedlab.runs import RunDir, RunFolderError, default_run_path, without_bidi

#: Only the project's own user errors become one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (UserError,)


def _scalar(hint: Any) -> tuple[Callable[[str], Any] | None, list[str] | None]:
    """How one flag value is read: (converter, choices) from a field's type hint, ranges left to pydantic."""
    if typing.get_origin(hint) is Annotated:
        return _scalar(typing.get_args(hint)[0])
    if typing.get_origin(hint) is Literal:
        return str, [str(a) for a in typing.get_args(hint)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _scalar(next(a for a in typing.get_args(hint) if a is not type(None)))
    return {int: int, float: float, str: str}.get(hint, str), None


def _comma_list(convert: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [convert(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    return parse


def add_setting_flags(p: argparse.ArgumentParser, cls: type, names: Sequence[str] | None = None) -> None:
    """One flag per setting of ``cls`` (or of ``names``), all derived from its declaration: spelling, type, choices, help."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in settings_of(cls):
        if names is not None and f.name not in names:
            continue
        meta, hint, default = f.metadata, hints[f.name], _default_of(f)
        shown = [] if "default" in meta["help"] or default in (None, [], {}) or isinstance(default, (bool, dict)) else [
            f"default {_shown(default)}"]
        shown += [f"profile {name}: {_shown(over[f.name])}" for name, sections in PROFILES.items()
                  for section, over in sections.items() if STUDY_CLASSES.get(section) is cls and f.name in over and f.name != "grid"]
        shown += [r for r in [range_text(hint)] if r]
        help_text = (meta["help"] + (f" ({'; '.join(shown)})" if shown else "")).replace("%", "%%")
        if f.name == "grid":  # one setting, two flags: which optimisers, and the rates of one of them
            p.add_argument("--optimizers", metavar="OPT,OPT", help="comma-separated subset of the sweep's optimisers, e.g. adam,sgd "
                           f"(default: {','.join(DEFAULT_GRID)})")
            p.add_argument("--lrs", type=_lr_spec, action="append", metavar="OPT=LR,...", help="learning rates of one optimiser "
                           "(repeatable), e.g. adam=0.1,0.3")
            continue
        flag = flag_of(f)
        metavar = flag.lstrip("-").upper().replace("-", "_")
        bare = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint  # the type without its range
        if hint is bool:
            p.add_argument(flag, dest=f.name, action=_once(argparse.BooleanOptionalAction), default=None,
                           help=help_text + f" (default: {'on' if default else 'off'})")
        elif typing.get_origin(bare) is list:
            convert, choices = _scalar(typing.get_args(bare)[0])
            if meta["repeat"]:
                p.add_argument(flag, dest=f.name, action="append", metavar=metavar, help=help_text)
            else:
                what = "integers" if convert is int else "numbers" if convert is float else "names"
                p.add_argument(flag, dest=f.name, type=_comma_list(convert, what), metavar="A,B,...",
                               help=help_text + (f"; from {', '.join(choices)}" if choices else ""))
        else:
            convert, choices = _scalar(hint)
            p.add_argument(flag, dest=f.name, type=convert, choices=choices, metavar=None if choices else metavar, help=help_text)


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]


def _shown(value: Any) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) else (
        f"{value:g}" if isinstance(value, float) else str(value))


def _lr_spec(text: str) -> tuple[str, list[float]]:
    name, sep, lrs = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected OPTIMISER=LR1,LR2,... (e.g. adam=0.01,0.1), got {text!r}")
    return name.strip(), _comma_list(float, "numbers")(lrs)


def _add_run_folder_args(p: argparse.ArgumentParser, study: str, resume: str | None) -> None:
    p.add_argument("--out", type=Path, help=f"run folder to create (default: runs/<timestamp>-{study})")
    if resume:
        p.add_argument("--resume", type=Path, metavar="RUN", help=resume)
    p.add_argument("--config", metavar="FILE.json", help="one JSON file of settings (a key given twice is refused): a run's config.json works ("
                   + ("its probe, finetune and movies sections)" if study == "study" else f"its {study!r} section is read)"))
    p.add_argument("--profile", choices=[*PROFILE_NAMES, *PROFILE_ALIASES], metavar="{" + ",".join(PROFILE_NAMES) + "}",
                   help="preset sizes: auto (default) is gpu on CUDA, else cpu; smoke: small subsets, for checks")


def _layered(default: Any, profile: dict[str, Any], config_path: str | None, section: str, flags: dict[str, Any]) -> Any:
    """defaults < profile < --config file (its ``section`` or the whole object) < flags, then validated."""
    cfg = apply_overrides(default, profile)
    if config_path:
        data = load_config_file(config_path)
        if set(data) & set(CONFIG_KEYS):  # a study's file (a run's config.json): take this command's section
            section_data = check_sections(data, config_path).get(section, {})
        else:  # a file of this command's settings alone
            section_data = data
        if isinstance(section_data, dict):  # "resolved": what a run derived
            section_data = {k: v for k, v in section_data.items() if k != "resolved"}
        cfg = apply_overrides(cfg, section_data, section)
    cfg = apply_overrides(cfg, flags, flags=True)
    cfg.validate()
    return cfg


def _flags(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _setting_flags(args: argparse.Namespace, cls: type, policy: str | None = None) -> dict[str, Any]:
    """The settings of ``cls`` given on the command line (those of one resume ``policy`` only, when given), with their followers."""
    names = [f.name for f in settings_of(cls) if f.name != "grid" and (policy is None or f.metadata["resume"] == policy)]
    return with_followers(cls, _flags(args, names))


def _given_flags(args: argparse.Namespace, cls: type, policy: str) -> list[str]:
    """The flags given on the command line for the settings of ``cls`` under one resume ``policy``."""
    out = []
    for f in settings_of(cls):
        if f.metadata["resume"] != policy:
            continue
        if f.name == "grid":
            out += [flag for flag, key in (("--optimizers", "optimizers"), ("--lrs", "lrs")) if getattr(args, key, None)]
        elif getattr(args, f.name, None) is not None:
            out.append(flag_of(f))
    return out


def _start_run(args: argparse.Namespace, study: str) -> RunDir:
    """``--out``, or a new timestamped folder: one started in the same second as another run gets the next free suffix."""
    if args.out is not None:
        run = RunDir.create(args.out)
    else:
        stamped = default_run_path(study)
        for n in range(1, 100):
            path = stamped if n == 1 else stamped.with_name(f"{stamped.name}-{n}")
            try:
                run = RunDir.create(path)
                break
            except RunFolderError:
                if not path.is_dir():  # not taken by another run: a real problem (no permission, a read-only disk)
                    raise
        else:
            raise RunFolderError(f"99 run folders named {stamped}-N exist already; pass --out")
    print(f"run folder: {run.path}")
    return run


def movies_config(args: argparse.Namespace) -> MoviesConfig:
    """defaults < profile < --config file < flags."""
    flags = _setting_flags(args, MoviesConfig)
    profile = profile_overrides(args.profile or "auto", "movies", False)
    if args.optimizers or args.lrs:
        base = _layered(MoviesConfig(), profile, args.config, "movies", {})
        grid = dict(base.grid)
        if args.optimizers:
            # an optimiser the profile's grid leaves out gets the default grid's rates (the smoke grid has two optimisers)
            grid = {n.strip(): grid.get(n.strip()) or DEFAULT_GRID.get(n.strip(), []) for n in args.optimizers.split(",") if n.strip()}
        for name, lrs in args.lrs or []:
            grid[name] = lrs
        flags["grid"] = grid
    return _layered(MoviesConfig(), profile, args.config, "movies", flags)


def _refuse_with_resume(args: argparse.Namespace, refused: Sequence[str]) -> None:
    """--resume continues with the saved settings: any of the ``refused`` flags given on the command line is an error, not ignored."""
    if refused:
        raise InputError(f"--resume continues {args.resume} with its saved settings, which {', '.join(refused)} would change; "
                         f"start a new run instead (--config {args.resume}/config.json repeats it with your changes)")


def _command_flags(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The flags of the command itself (not settings) given on the command line."""
    return [f"--{n}" for n in names if getattr(args, n, None) is not None]


def resumed_movies_config(args: argparse.Namespace) -> MoviesConfig:
    """The stopped movie run's saved settings, with --data-dir, --offline and --allow-modified-data applied."""
    _refuse_with_resume(args, _given_flags(args, MoviesConfig, "refuse") + _command_flags(args, ("out", "config", "profile")))
    run = RunDir.open(args.resume)
    saved = load_config_file(run.path / "config.json")
    if "study" in saved or not isinstance(saved.get("movies"), dict):
        raise InputError(f"{run.path} was not made by 'embedlab movies'; resume it with the command that made it")
    section = {k: v for k, v in saved["movies"].items() if k != "resolved"}
    return apply_overrides(MoviesConfig(), {**section, **_setting_flags(args, MoviesConfig, "apply")})


def _movies_finished(path: Path) -> bool:
    from embedlab.results import load

    done = load(RunDir.open(path)).movies_run
    return done is not None and done.total_seconds is not None and done.status is None


def on_ranks(backend_device: str, main_folder: Callable[[], RunDir], body: Callable[[RunDir], int]) -> int:
    """``body(run)`` once, or on every rank of a torchrun job: rank 0 in ``main_folder()``, the others
    in scratch folders removed afterwards (rank 0 alone keeps files). A folder that rank 0 cannot create
    stops every rank."""
    from embedlab.distributed import init_from_env, shutdown

    dist = init_from_env(backend_device)
    try:
        problem: Exception | None = None
        run: RunDir | None = None
        try:
            run = main_folder() if dist.is_main else RunDir.create(Path(tempfile.mkdtemp(prefix=f"embedlab-rank{dist.rank}-")))
        except EXPECTED_ERRORS as exc:
            problem = exc
        if not dist.agree(problem is None):
            raise problem or PeerFailed("rank 0 could not create the run folder; its message says why")
        assert run is not None
        try:
            with run_log(run.path) if dist.is_main else contextlib.nullcontext():  # rank 0's folder keeps the lines
                return body(run)
        finally:
            run.release()
            if not dist.is_main:  # a scratch folder this rank created itself
                shutil.rmtree(run.path, ignore_errors=True)
    finally:
        shutdown(dist)


def cmd_movies(args: argparse.Namespace) -> int:
    """The movie study; under torchrun every rank runs it in lockstep and rank 0 alone keeps a run folder."""
    cfg = resumed_movies_config(args) if args.resume else movies_config(args)
    if args.resume and _movies_finished(args.resume):
        print(f"{args.resume} already holds a finished movie study; nothing to resume (its report: {args.resume / 'report.html'})")
        return 0
    if args.resume:
        from embedlab.movies.pipeline import check_same_data
        from embedlab.results import load

        check_same_data(cfg, load(RunDir.open(args.resume)), args.resume)
    return on_ranks("cpu", lambda: _movies_folder(args), lambda run: _movies_on_rank(cfg, run))


def _movies_folder(args: argparse.Namespace) -> RunDir:
    """Rank 0's run folder: new, or the one resumed with its failure mark cleared."""
    if not args.resume:
        return _start_run(args, "movies")
    from embedlab.results import mark_stopped

    run = RunDir.open(args.resume, write=True)
    mark_stopped(run, None)
    print(f"resuming {run.path}: the movie study runs again with its saved settings")
    return run


def _movies_on_rank(cfg: MoviesConfig, run: RunDir) -> int:
    from embedlab.config import to_dict
    from embedlab.movies.pipeline import run_movies
    from embedlab.report import write_report
    from embedlab.store import writer

    try:
        run.update_config("movies", to_dict(cfg))
        results = run_movies(cfg, writer(run))
    except BaseException as exc:
        _mark_failed(run, exc)
        raise
    if not current().is_main:
        return 0
    report = write_report(run)
    fit, recs = results.movies_fit, results.movies_recommend
    assert fit is not None and recs is not None  # a finished study has both
    print(f"best run: {fit.best_optimizer} lr={fit.best_lr:g}, gap to spectral optimum {100 * fit.best_gap_to_optimum:.3f} %")
    for title in recs.query_titles.values():  # the resolved titles, in query order
        print(f"top{cfg.top_k}[{without_bidi(title)}]: " + "; ".join(map(without_bidi, recs.top[title])))
    print(f"report: {report}")
    return 0


def _mark_failed(run: RunDir, exc: BaseException) -> None:
    """A run that stopped is never left looking complete: metrics.json says so. A folder in which nothing was computed
    gets no metrics.json: it holds no result, so the next run may use it again."""
    if not (run.path / "metrics.json").exists():
        return
    from embedlab.results import mark_stopped

    try:
        mark_stopped(run, f"{'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}: {failure_text(exc)}")
    except (OSError, UserError):  # a full disk: the error being raised already says what went wrong
        pass


def cmd_recommend(args: argparse.Namespace) -> int:
    from embedlab.movies.saved import SavedEmbeddings

    # the study's own declarations of these settings check them (ranges and choices)
    apply_overrides(MoviesConfig(), _flags(argparse.Namespace(top_k=args.top, metric=args.metric, min_likes=args.min_likes),
                                           ("top_k", "metric", "min_likes")), flags=True)
    saved = SavedEmbeddings.load(RunDir.open(args.run).path)
    table = saved.recommend(args.title, k=args.top, metric=args.metric, min_likes=args.min_likes)
    if table.attrs.get("note"):
        print(f"embedlab: note: {table.attrs['note']}", file=sys.stderr)
    shown = table.assign(title=table["title"].map(without_bidi))  # a terminal shows bidi controls' reordering too
    print(f"Top {len(table)} for {without_bidi(table.attrs['query'])} ({table.attrs['metric']}, movies with >= {table.attrs['min_likes']} likes):")
    print(shown.to_string(index=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from embedlab.report import write_report

    if (args.run is None) == (args.folder is None):
        raise InputError("report: name one run folder, as RUN or --run RUN")
    report = write_report(RunDir.open(args.run or args.folder, write=True))
    print(f"report: {report} and {report.with_suffix('.html')} ({report.with_suffix('.html').stat().st_size / 1e6:.1f} MB)")
    return 0


def probe_config(args: argparse.Namespace) -> ProbeConfig:
    """defaults < profile < --config file < flags."""
    return _layered(ProbeConfig(), profile_overrides(args.profile or "auto", "probe", wants_cuda(args.device)), args.config, "probe",
                    _setting_flags(args, ProbeConfig))


def cmd_probe(args: argparse.Namespace) -> int:
    cfg = probe_config(args)
    run = _start_run(args, "probe")
    from embedlab.report import write_report
    from embedlab.store import Store
    from embedlab.vision.pipeline import run_probe

    with run_log(run.path):
        probe = run_probe(cfg, Store(run))
    report = write_report(run)
    feats, fit = probe.features, probe.fit
    print(f"{feats.backbone} ({feats.weights}) at {feats.resolution} px: test accuracy {fit.evaluation.test_accuracy:.4f} "
          f"(val {fit.val_accuracy:.4f}, L2 {fit.l2:g})")
    print(f"report: {report}")
    return 0


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """defaults < profile (auto: by device) < --config file < flags."""
    return _layered(FinetuneConfig(), profile_overrides(args.profile or "auto", "finetune", wants_cuda(args.device)), args.config,
                    "finetune", _setting_flags(args, FinetuneConfig))


def wants_cuda(device: str | None) -> bool:
    """Whether ``--device`` (unset, auto, cuda or cuda:N) will run on CUDA here: the gpu profile and the nccl backend."""
    import torch

    return torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))


def _backend_device(device: str | None) -> str:
    """"cuda" (nccl) when the run will train on CUDA, else "cpu" (gloo)."""
    return "cuda" if wants_cuda(device) else "cpu"


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tuning; under torchrun every rank trains its share of each batch (DistributedDataParallel)."""
    if args.resume:
        _refuse_with_resume(args, _given_flags(args, FinetuneConfig, "refuse") + _command_flags(args, ("out", "config", "profile")))
        run = RunDir.open(args.resume)  # claimed by rank 0 in on_ranks
        saved = run.read_json("config.json").get("finetune", {})
        saved = {k: v for k, v in saved.items() if k != "resolved"} if isinstance(saved, dict) else {}
        if not saved:
            raise InputError(f"{run.path} holds no fine-tuning config; start a new run with --out")
        cfg = apply_overrides(FinetuneConfig(), {**saved, **_setting_flags(args, FinetuneConfig, "apply")}, "finetune")
        cfg.validate()
        print(f"resuming {run.path}")
        main_folder: Callable[[], RunDir] = run.claimed  # rank 0 alone writes into it
    else:
        cfg = finetune_config(args)
        main_folder = lambda: _start_run(args, "finetune")  # noqa: E731
    return on_ranks(_backend_device(cfg.device), main_folder, lambda r: _finetune_on_rank(cfg, r, bool(args.resume)))


def _finetune_on_rank(cfg: FinetuneConfig, run: RunDir, resume: bool) -> int:
    from embedlab.report import write_report
    from embedlab.results import load
    from embedlab.store import Store
    from embedlab.vision.pipeline import run_finetune

    ft = run_finetune(cfg, Store(run), resume=resume)
    if not current().is_main:
        return 0
    report = write_report(run)
    print(f"fine-tuned {ft.backbone} at {ft.resolution} px: test accuracy {ft.evaluation.test_accuracy:.4f} "
          f"({ft.train_seconds / 60:.1f} min of training, {ft.epochs} epochs)")
    if (probe := load(run).probe) is not None:
        print(f"fixed features (linear probe) at {probe.features.resolution} px: test accuracy {probe.fit.evaluation.test_accuracy:.4f}")
    print(f"report: {report}")
    return 0


#: The study settings that `embedlab run` offers as flags: those declared with ``run=True``, each applied to every study that has it.
STUDY_CLASSES = {"probe": ProbeConfig, "finetune": FinetuneConfig, "movies": MoviesConfig}


def run_settings() -> dict[str, dataclasses.Field]:
    """The settings of `embedlab run`, by name: one declaration each (a setting that several studies share is declared once)."""
    out: dict[str, dataclasses.Field] = {}
    for cls in STUDY_CLASSES.values():
        for f in settings_of(cls):
            if f.metadata["run"]:
                out.setdefault(f.name, f)
    return out


def _run_flags(args: argparse.Namespace, policy: str | None = None) -> dict[str, Any]:
    return _flags(args, [n for n, f in run_settings().items() if policy is None or f.metadata["resume"] == policy])


def _resumed_study(args: argparse.Namespace) -> tuple[RunDir, Any]:
    """The saved run and its exact config, with the flags that do not change results applied."""
    from embedlab.study import study_config

    _refuse_with_resume(args, [flag_of(f) for n, f in run_settings().items()
                               if f.metadata["resume"] == "refuse" and getattr(args, n, None) is not None]
                        + _command_flags(args, ("profile", "steps", "out")))
    run = RunDir.open(args.resume)  # claimed by rank 0 in on_ranks
    saved = load_config_file(run.path / "config.json")
    study = saved.get("study")
    if not isinstance(study, dict) or not isinstance(study.get("profile"), str) or not isinstance(study.get("steps"), list):
        raise InputError(f"{run.path} was not made by 'embedlab run' (its config.json has no 'study' section with profile and steps); "
                         "resume it with the command that made it")
    sections = {k: saved.get(k, {}) for k in STUDY_SECTIONS}
    if args.config:  # a fix for the steps not yet done, e.g. a lower learning rate after a divergence
        extra = check_sections(load_config_file(args.config), args.config)
        sections = {k: {**_as_section(v, k, run.path / "config.json"), **_as_section(extra.get(k, {}), k, args.config)}
                    for k, v in sections.items()}
    cfg = study_config(study["profile"], False, _run_flags(args, "apply"), {**sections, "steps": study["steps"]})
    print(f"resuming {run.path}")
    return run, cfg


def _as_section(value: Any, name: str, source: str | Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"section {name!r} of {source} must be a JSON object of settings, got {value!r}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: every mission item into one run folder, then report.md and report.html."""
    from embedlab.study import study_config

    if args.resume:
        run, cfg = _resumed_study(args)
        main_folder: Callable[[], RunDir] = run.claimed  # rank 0 alone writes into it
    else:
        shared = {**_run_flags(args), **_flags(args, ("steps",))}
        sections = check_sections(load_config_file(args.config), args.config) if args.config else {}
        saved_study = _as_section(sections.get("study", {}), "study", args.config)
        if "steps" in saved_study and "steps" not in sections:  # a run's config.json: repeat its steps too
            sections["steps"] = saved_study["steps"]
        profile = args.profile or saved_study.get("profile", "auto")
        if not isinstance(profile, str) or profile not in (*PROFILE_NAMES, *PROFILE_ALIASES):
            raise InputError(f"study.profile in {args.config} is {profile!r}; choose from {', '.join(PROFILE_NAMES)}")
        cfg = study_config(profile, wants_cuda(args.device), shared, sections)
        main_folder = lambda: _start_run(args, "study")  # noqa: E731
    return on_ranks(_backend_device(cfg.finetune.device), main_folder, lambda r: _study_on_rank(cfg, r, bool(args.resume)))


def _study_on_rank(cfg: Any, run: RunDir, resume: bool) -> int:
    from embedlab.report import summary_rows, write_report
    from embedlab.study import run_study

    results = run_study(cfg, run, resume=resume)
    if not current().is_main:
        return 0
    report = write_report(run)
    print("\nsummary:")
    for step, status, minutes, headline in summary_rows(results):
        print(f"  {step:<9} {status:<7} {minutes:>6} min  {headline}")
    print(f"report: {report.with_suffix('.html')} (and {report.name})")
    return 0


#: What each command does for its user: the first lines of its --help.
DESCRIPTIONS = {
    "embedlab": "Two representation-learning studies with a readable report: how ImageNet features transfer to CIFAR-10 "
                "(a linear probe on frozen features, then fine-tuning), and movie embeddings fitted to MovieLens co-likes "
                "that recommend films by title. Start with: embedlab run --data-dir DATA",
    "run": "Run both studies into one run folder: the linear probe and its galleries, fine-tuning and the comparison, the movie "
           "embeddings and their recommendations; then open report.html. Works offline: --backbone auto picks ResNet-18 when "
           "its weights are at hand, else the best offline backbone.",
    "movies": "Build the co-like matrix from MovieLens, fit movie embeddings by gradient descent with several optimisers and "
              "learning rates, compare them with the exact optimum, recommend movies and check them on held-out users.",
    "vision": "CIFAR-10 transfer learning from an ImageNet-pretrained network: the linear probe, or fine-tuning.",
    "probe": "Extract features with the frozen network, fit a logistic regression on them, and show the most confident right "
             "and wrong test predictions of every class.",
    "finetune": "Fine-tune the pretrained network on CIFAR-10, evaluate it as the probe is evaluated, and compare the two.",
    "recommend": "The movies most similar to TITLE in a finished run's embedding. Titles are found as people type them: "
                 "case, a leading article and the year are optional.",
    "report": "Render report.md and report.html again from a run folder's saved results (nothing is recomputed).",
}


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags; the settings' flags are generated from their declarations in ``embedlab.config``."""
    parser = _Parser(prog="embedlab", description=DESCRIPTIONS["embedlab"],
                     epilog="--debug anywhere on the line shows the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"embedlab {importlib.metadata.version('embedlab')}")
    sub = parser.add_subparsers(dest="command", required=True)
    output = _Parser(add_help=False)  # on every command
    loudness = output.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print warnings, errors and the results only")
    loudness.add_argument("-v", "--verbose", action="store_true", help="print debugging detail too")
    prun = sub.add_parser("run", parents=[output], help="the main job: both studies into one run folder, with report.html",
                          description=DESCRIPTIONS["run"])
    _add_run_folder_args(prun, "study", "continue a stopped run folder: finished steps are kept, fine-tuning resumes from its last epoch")
    prun.add_argument("--steps", type=lambda t: [s.strip() for s in t.split(",") if s.strip()], metavar="A,B",
                      help="subset of probe,finetune,movies (default all)")
    added: set[str] = set()
    for cls in STUDY_CLASSES.values():  # each study's settings that the main job offers, a shared one once
        names = [f.name for f in settings_of(cls) if f.metadata["run"] and f.name not in added]
        add_setting_flags(prun, cls, names)
        added.update(names)
    prun.set_defaults(func=cmd_run)
    pm = sub.add_parser("movies", parents=[output], help="movie embeddings from MovieLens co-likes, recommendations and their checks, into a run folder",
                          description=DESCRIPTIONS["movies"])
    _add_run_folder_args(pm, "movies", "run a stopped 'embedlab movies' folder again with its saved settings")
    add_setting_flags(pm, MoviesConfig)
    pm.set_defaults(func=cmd_movies)
    pv = sub.add_parser("vision", parents=[output], help="CIFAR-10 transfer learning: the linear probe, or fine-tuning",
                          description=DESCRIPTIONS["vision"])
    vsub = pv.add_subparsers(dest="vision_command", required=True)
    pp = vsub.add_parser("probe", parents=[output], help="frozen features + logistic regression + galleries, into a run folder",
                          description=DESCRIPTIONS["probe"])
    _add_run_folder_args(pp, "probe", None)
    add_setting_flags(pp, ProbeConfig)
    pp.set_defaults(func=cmd_probe)
    pf = vsub.add_parser("finetune", parents=[output], help="fine-tune the backbone, evaluate, gallery, compare with the probe, into a run folder",
                          description=DESCRIPTIONS["finetune"])
    _add_run_folder_args(pf, "finetune", "continue an interrupted run folder from its last complete epoch")
    add_setting_flags(pf, FinetuneConfig)
    pf.set_defaults(func=cmd_finetune)
    pr = sub.add_parser("recommend", parents=[output], help="top-k similar movies from a finished run's embedding",
                          description=DESCRIPTIONS["recommend"])
    pr.add_argument("title", help="movie title, e.g. 'Toy Story' or 'Matrix, The (1999)'")
    pr.add_argument("--run", required=True, metavar="RUN", help="a run folder holding a finished movie study")
    pr.add_argument("--top", type=int, default=10, help="how many (default 10)")
    pr.add_argument("--metric", choices=["cosine", "dot"], help="default: the run's")
    pr.add_argument("--min-likes", type=int, help="default: the run's")
    pr.set_defaults(func=cmd_recommend)
    prep = sub.add_parser("report", parents=[output], help="render report.md and report.html again from a run folder's saved results",
                          description=DESCRIPTIONS["report"])
    prep.add_argument("folder", nargs="?", metavar="RUN", help="a run folder (or --run RUN)")
    prep.add_argument("--run", metavar="RUN", help="a run folder")
    prep.set_defaults(func=cmd_report)
    return parser


def _once(action: type[argparse.Action]) -> type[argparse.Action]:
    """``action`` refusing a second use of its flag in one command line (``--top 2 --top 3``, ``--map --no-map``):
    a repeated single-valued flag would otherwise keep its last value without a word. Lists that are given by
    repeating a flag (``--query``, ``--lrs``) use ``append`` and stay repeatable."""

    class Once(action):  # type: ignore[valid-type, misc]
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            seen = namespace.__dict__.setdefault("_flags_seen", {})
            if self.dest in seen:
                both = [" ".join([str(o), _shown(v)]) if v not in (None, []) else str(o) for o, v in (seen[self.dest], (option_string, values))]
                raise argparse.ArgumentError(self, f"given twice ({both[0]}, then {both[1]}); give it once")
            seen[self.dest] = (option_string, values)
            super().__call__(parser, namespace, values, option_string)

    Once.__name__ = f"Once{action.__name__}"
    return Once


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one ``embedlab: error:`` line like every other error (usage only with --help), and
    whose single-valued flags may be given once (``_once``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, action in ((None, argparse._StoreAction), ("store", argparse._StoreAction),
                             ("store_true", argparse._StoreTrueAction), ("store_false", argparse._StoreFalseAction)):
            self.register("action", name, _once(action))

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{self.prog}: {message} (see '{self.prog} --help')")


class CommandLineError(InputError):
    """A flag argparse could not parse."""


def _error_line(kind: str, text: str) -> None:
    """One line on stderr, written with one system call, so the ranks of a torchrun job never run their lines together."""
    world = os.environ.get("WORLD_SIZE", "1")
    where = f"[rank {os.environ.get('RANK', '?')}] " if world.isdigit() and int(world) > 1 else ""
    line = f"embedlab: {kind}: {where}{' '.join(text.split())}\n"  # one line, whatever the message held
    sys.stdout.flush()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by a Python object (a notebook, a test's capture)
        sys.stderr.write(line)
        sys.stderr.flush()
        return
    sys.stderr.flush()
    os.write(fd, line.encode("utf-8", "replace"))


def _out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, torch's CPU allocator failing, or CUDA running out of memory."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)


def _loudness(args: argparse.Namespace) -> int:
    """The console's logging level: --quiet, --verbose, or info; the other ranks of a torchrun job print warnings only."""
    if getattr(args, "quiet", False) or os.environ.get("RANK", "0") not in ("", "0"):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", False) else logging.INFO


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's stop, torchrun stopping its workers), handled as Ctrl-C is: every step that
    finished is kept, the one that was running is marked interrupted, and one line says how to continue."""


#: Whether this process received SIGTERM: a step may re-raise the interrupt with its own message (fine-tuning names its
#: checkpoint), and the exit status still says which signal stopped it.
_SIGTERM_SEEN: list[bool] = []


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    _SIGTERM_SEEN.append(True)
    raise Terminated("terminated (SIGTERM); finished steps are saved in the run folder; continue with --resume RUN")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    """SIGTERM raises ``Terminated`` while the command runs (the main thread only: signals are delivered there)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _SIGTERM_SEEN.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with _sigterm_as_interrupt():
        return _main(argv)


def _main(argv: list[str]) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files: no window, and no GUI toolkit in the sweep's threads
    debug = "--debug" in argv  # anywhere on the line: the full traceback instead of the one-line message
    try:
        args = build_parser().parse_args([a for a in argv if a != "--debug"])
        with console(_loudness(args)):
            return int(args.func(args))
    except EXPECTED_ERRORS as exc:
        if debug:
            raise
        _error_line("error", str(exc))
        return 2
    except (MemoryError, RuntimeError) as exc:  # out of memory is the machine's limit, not a bug: any other RuntimeError is
        if debug or not _out_of_memory(exc):
            raise
        _error_line("error", f"out of memory ({failure_text(exc)[:160]}); use smaller sizes (--batch-size, --dim, --top, a smaller "
                             "dataset) or a machine with more memory; finished steps are kept in the run folder")
        return 2
    except OSError as exc:  # a full disk outside embedlab's own writers (a library's temporary file, say)
        if debug or exc.errno not in NO_SPACE:
            raise
        _error_line("error", str(disk_full(Path(exc.filename or Path.cwd() / "?"), None)))
        return 2
    except KeyboardInterrupt as exc:
        _error_line("interrupted", str(exc) or "finished steps are saved in the run folder; continue with --resume RUN")
        return 143 if _SIGTERM_SEEN else 130  # 128 + the signal's number, as a shell reports it
    finally:
        RunDir.release_all()


if __name__ == "__main__":
    sys.exit(main())
