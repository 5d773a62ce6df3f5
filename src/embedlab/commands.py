"""What each command does: its run folder (new, or resumed), the study on every rank of a torchrun job, and a short
summary of what it found."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedlab.config import FinetuneConfig, MoviesConfig
from embedlab.distributed import PeerFailed, current
from embedlab.errors import GO_ON, InputError, UserError, failure_text
from embedlab.logs import run_log
from embedlab.overrides import apply_overrides
from embedlab.resolve import (
    backend_device,
    finetune_config,
    given,
    movies_config,
    probe_config,
    resumed,
    study_settings,
)
from embedlab.runs import RunDir, RunFolderError, default_run_path
from embedlab.text import percent, without_bidi

#: Only the project's own user errors become one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (UserError,)


def start_run(args: argparse.Namespace, study: str) -> RunDir:
    """``--out``, or a new timestamped folder: one started in the same second as another run gets the next free
    suffix."""
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


def resumable(command: str, body: Callable[[RunDir], int]) -> Callable[[RunDir], int]:
    """``body``, whose interruption (Ctrl+C, SIGTERM) says how to go on: ``embedlab <command> --resume <folder>``."""

    def run_body(run: RunDir) -> int:
        try:
            return body(run)
        except KeyboardInterrupt as exc:
            what = str(exc).removesuffix(f"; {GO_ON}") or "finished steps are saved in the run folder"
            raise type(exc)(f"{what}; continue with: embedlab {command} --resume {run.path}") from None

    return run_body


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
            run = (
                main_folder()
                if dist.is_main
                else RunDir.create(Path(tempfile.mkdtemp(prefix=f"embedlab-rank{dist.rank}-")))
            )
        except EXPECTED_ERRORS as exc:
            problem = exc
        if not dist.agree(problem is None):
            raise problem or PeerFailed("rank 0 could not create the run folder; its message says why")
        assert run is not None
        try:
            with _logged(run) if dist.is_main else contextlib.nullcontext():  # rank 0's folder keeps the lines
                return body(run)
        finally:
            run.release()
            if not dist.is_main:  # a scratch folder this rank created itself
                shutil.rmtree(run.path, ignore_errors=True)
    finally:
        shutdown(dist)


def mark_failed(run: RunDir, exc: BaseException) -> None:
    """A run that stopped is never left looking complete: metrics.json says so. A folder in which nothing was computed
    gets no metrics.json: it holds no result, so the next run may use it again."""
    if not (run.path / "metrics.json").exists():
        return
    from embedlab.store import mark_stopped

    try:
        mark_stopped(run, f"{'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}: {failure_text(exc)}")
    except (OSError, UserError):  # a full disk: the error being raised already says what went wrong
        pass


def _movies_finished(path: Path) -> bool:
    from embedlab.store import load

    done = load(RunDir.open(path)).movies_run
    return done is not None and done.total_seconds is not None and done.status is None


def cmd_movies(args: argparse.Namespace) -> int:
    """The movie study; under torchrun every rank runs it in lockstep and rank 0 alone keeps a run folder."""
    cfg = resumed(args, "movies")[1] if args.resume else movies_config(args)
    if args.resume and _movies_finished(args.resume):
        print(
            f"{args.resume} already holds a finished movie study; nothing to resume (its report:"
            f" {args.resume / 'report.html'})"
        )
        return 0
    if args.resume:
        from embedlab.movies.pipeline import check_same_data
        from embedlab.store import load

        check_same_data(cfg, load(RunDir.open(args.resume)), args.resume)
    return on_ranks("cpu", lambda: _movies_folder(args), resumable("movies", lambda run: _movies_on_rank(cfg, run)))


def _movies_folder(args: argparse.Namespace) -> RunDir:
    """Rank 0's run folder: new, or the one resumed with its failure mark cleared."""
    if not args.resume:
        return start_run(args, "movies")
    from embedlab.store import mark_stopped

    run = RunDir.open(args.resume, write=True)
    mark_stopped(run, None)
    print(f"resuming {run.path}: the movie study runs again with its saved settings")
    return run


def _movies_on_rank(cfg: MoviesConfig, run: RunDir) -> int:
    from embedlab.movies.pipeline import run_movies
    from embedlab.overrides import to_dict
    from embedlab.report import write_report
    from embedlab.store import Store, writer

    try:
        Store(run).settings("movies", to_dict(cfg))
        results = run_movies(cfg, writer(run))
    except BaseException as exc:
        mark_failed(run, exc)
        raise
    if not current().is_main:
        return 0
    report = write_report(run)
    fit, recs = results.movies_fit, results.movies_recommend
    assert fit is not None and recs is not None  # a finished study has both
    print(
        f"best run: {fit.best_optimizer} lr={fit.best_lr:g}, gap to spectral optimum"
        f" {100 * fit.best_gap_to_optimum:.3f} %"
    )
    for title in recs.query_titles.values():  # the resolved titles, in query order
        print(f"top{cfg.top_k}[{without_bidi(title)}]: " + "; ".join(map(without_bidi, recs.top[title])))
    print(f"report: {report}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from embedlab.movies.saved import MovieEmbedding
    from embedlab.store import Store

    # the study's own declarations of these settings check them (ranges and choices)
    apply_overrides(
        MoviesConfig(),
        given(
            argparse.Namespace(top_k=args.top, metric=args.metric, min_likes=args.min_likes),
            ("top_k", "metric", "min_likes"),
        ),
        flags=True,
    )
    saved = MovieEmbedding.from_store(Store(RunDir.open(args.run)))
    table = saved.similar(args.title, k=args.top, metric=args.metric, min_likes=args.min_likes)
    if table.attrs.get("note"):
        print(f"embedlab: note: {table.attrs['note']}", file=sys.stderr)
    shown = table.assign(title=table["title"].map(without_bidi))  # a terminal shows bidi controls' reordering too
    print(
        f"Top {len(table)} for {without_bidi(table.attrs['query'])} ({table.attrs['metric']}, movies with >="
        f" {table.attrs['min_likes']} likes):"
    )
    print(shown.to_string(index=False))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from embedlab.errors import MissingFileError
    from embedlab.store import Store
    from embedlab.vision.classifier import Classifier, NotAnImage, read_image, top_lines

    if not 1 <= args.top <= 10:
        raise InputError(f"--top: expected 1 to 10 (CIFAR-10 has ten classes), got {args.top}")
    store = Store.open(Path(args.run))
    images, failed = {}, 0
    for name in args.images:  # every unreadable file is named, and the others are still classified
        try:
            images[name] = read_image(name)
        except NotAnImage as exc:
            print(f"embedlab: error: {exc}", file=sys.stderr)
            failed += 1
    classifiers = []
    for model in ("probe", "finetuned") if args.model == "both" else (args.model,):
        try:
            classifiers.append(Classifier.from_store(store, model))
        except MissingFileError as exc:
            other = "finetuned" if model == "probe" else "probe"
            if args.model != "both":
                raise MissingFileError(f"{exc}; try --model {other}") from None
            print(f"embedlab: note: {exc}; showing the {other} model only", file=sys.stderr)
    if not classifiers:
        raise MissingFileError(f"{store.path} holds neither a linear probe nor a fine-tuned model: run embedlab run")
    for name, image in images.items():
        print(without_bidi(name))
        print("\n".join(top_lines(classifiers, image, args.top)))
    return 2 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from embedlab.report import write_report

    if (args.run is None) == (args.folder is None):
        raise InputError("report: name one run folder, as RUN or --run RUN")
    report = write_report(RunDir.open(args.run or args.folder, write=True))
    print(
        f"report: {report} and {report.with_suffix('.html')}"
        f" ({report.with_suffix('.html').stat().st_size / 1e6:.1f} MB)"
    )
    return 0


def _logged(run: RunDir) -> contextlib.AbstractContextManager[None]:
    """Every log line of the command, debug included, appended to the run folder's run.log by its store."""
    from embedlab.store import Store

    return run_log(Store(run).append_log)


def cmd_probe(args: argparse.Namespace) -> int:
    cfg = probe_config(args)
    run = start_run(args, "probe")
    from embedlab.report import write_report
    from embedlab.store import Store
    from embedlab.vision.pipeline import run_probe

    with _logged(run):
        probe = run_probe(cfg, Store(run))
    report = write_report(run)
    feats, fit = probe.features, probe.fit
    print(
        f"{feats.backbone} ({feats.weights}) at {feats.resolution} px: test accuracy"
        f" {percent(fit.evaluation.test_accuracy)}"
        f" (val {percent(fit.val_accuracy)}, L2 {fit.l2:g})"
    )
    print(f"report: {report}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tuning; under torchrun every rank trains its share of each batch (DistributedDataParallel)."""
    if args.resume:
        run, cfg = resumed(args, "finetune")
        print(f"resuming {run.path}")
        main_folder: Callable[[], RunDir] = run.claimed  # rank 0 alone writes into it
    else:
        cfg = finetune_config(args)
        main_folder = lambda: start_run(args, "finetune")  # noqa: E731
    body = resumable("vision finetune", lambda r: _finetune_on_rank(cfg, r, bool(args.resume)))
    return on_ranks(backend_device(cfg.device), main_folder, body)


def _finetune_on_rank(cfg: FinetuneConfig, run: RunDir, resume: bool) -> int:
    from embedlab.report import write_report
    from embedlab.store import Store
    from embedlab.vision.pipeline import run_finetune

    store = Store(run)
    ft = run_finetune(cfg, store, resume=resume)
    if not current().is_main:
        return 0
    report = write_report(run)
    print(
        f"fine-tuned {ft.backbone} at {ft.resolution} px: test accuracy {percent(ft.evaluation.test_accuracy)} "
        f"({ft.train_seconds / 60:.1f} min of training, {ft.epochs:g} epochs)"
    )
    if (probe := store.results().probe) is not None:
        print(
            f"fixed features (linear probe) at {probe.features.resolution} px: test accuracy"
            f" {percent(probe.fit.evaluation.test_accuracy)}"
        )
    print(f"report: {report}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: every mission item into one run folder, then report.md and report.html."""
    if args.resume:
        run, cfg = resumed(args, "run")
        print(f"resuming {run.path}")
        main_folder: Callable[[], RunDir] = run.claimed  # rank 0 alone writes into it
    else:
        cfg = study_settings(args)
        if os.environ.get("WORLD_SIZE", "1") == "1":  # one process finds every missing input before it makes a folder
            from embedlab.study import check_inputs

            check_inputs(cfg)
        main_folder = lambda: start_run(args, "study")  # noqa: E731
    return on_ranks(
        backend_device(cfg.finetune.device),
        main_folder,
        resumable("run", lambda r: _study_on_rank(cfg, r, bool(args.resume))),
    )


def _study_on_rank(cfg: Any, run: RunDir, resume: bool) -> int:
    from embedlab.report import summary_rows, write_report
    from embedlab.study import run_study

    results = run_study(cfg, run, resume=resume)
    if not current().is_main:
        return 0
    report = write_report(run)
    print("\nsummary:")
    if cfg.profile == "smoke":
        print("  a smoke run: small subsets, to check that every step works; its numbers are not results")
    for step, status, minutes, headline in summary_rows(results):
        print(f"  {step:<9} {status:<7} {minutes:>6} min  {headline}")
    print(f"report: {report.with_suffix('.html')} (and {report.name})")
    return 0
