"""Command line: parse flags into typed configs, call the pipelines, print short summaries.

Every expected failure (missing data, bad flag, unknown title, existing run folder) ends with
one readable ``embedlab: error: ...`` message and exit status 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from embedlab.config import (CONFIG_KEYS, DEFAULT_GRID, FINETUNE_PROFILES, MOVIES_PROFILES, PROBE_PROFILES, STUDY_SECTIONS, FinetuneConfig,
                             MoviesConfig, ProbeConfig, apply_overrides, check_sections, finetune_profile, flag_name, load_config_file)
from embedlab.data import MOVIELENS_DATASETS
from embedlab.distributed import PeerFailed
from embedlab.errors import InputError, UserError, failure_text
from embedlab.files import NO_SPACE, disk_full
from embedlab.runs import RunDir, RunFolderError, default_run_path

BACKBONE_HELP = ("resnet18 (default), or efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2 "
                 "(ImageNet weights offline, from pip packages)")

#: Only the project's own user errors become one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (UserError,)


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _lr_spec(text: str) -> tuple[str, list[float]]:
    name, sep, lrs = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected OPTIMISER=LR1,LR2,... (e.g. adam=0.01,0.1), got {text!r}")
    return name.strip(), _floats(lrs)


def _add_movies_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding ml-latest-small/ (default: $EMBEDLAB_DATA_DIR, else ./data)")
    p.add_argument("--dataset", help=f"MovieLens release under --data-dir: {', '.join(MOVIELENS_DATASETS)} (default ml-latest-small)")
    p.add_argument("--synthetic", metavar="SHAPE", help="generate ratings shaped like ml-25m, ml-32m, ml-latest or Nx ml-latest-small (e.g. 8x)")
    p.add_argument("--allow-modified-data", action="store_true", default=None,
                   help="use ml-latest-small files that differ from the official release (recorded in metrics.json and the report)")
    p.add_argument("--offline", action="store_true", default=None, help="never download; fail if the data is missing")
    p.add_argument("--out", type=Path, help="run folder to create (default: runs/<timestamp>-movies)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="run a stopped 'embedlab movies' folder again with its saved settings")
    p.add_argument("--config", help="JSON file of settings (same keys as a run's config.json 'movies' section)")
    p.add_argument("--profile", choices=sorted(MOVIES_PROFILES), help="preset sizes (default: default; smoke: seconds, for checks)")
    p.add_argument("--like-threshold", type=float, help="a rating >= this counts as a like (default 4.0; 3.5 also sensible)")
    p.add_argument("--dim", type=int, help=f"embedding dimension (default {MoviesConfig().dim}, chosen by the held-out dimension sweep)")
    p.add_argument("--iterations", type=int, help="gradient steps per run (default 500)")
    p.add_argument("--seed", type=int, help="seed of the shared initial V and of the user split")
    p.add_argument("--optimizers", help="comma-separated subset of the grid, e.g. adam,sgd")
    p.add_argument("--lrs", type=_lr_spec, action="append", metavar="OPT=LR,...", help="learning rates of one optimiser (repeatable)")
    p.add_argument("--min-likes", type=int, help="never recommend movies with fewer likes (default 10)")
    p.add_argument("--metric", choices=["cosine", "dot"], help="similarity for recommendations (default cosine)")
    p.add_argument("--top", dest="top_k", type=int, help="recommendations per query (default 10)")
    p.add_argument("--query", dest="queries", action="append", metavar="TITLE", help="query movie (repeatable; default the mission's three)")
    p.add_argument("--dim-sweep", type=_ints, metavar="D1,D2,...", help="dimensions compared on held-out users (default 10,25,50,100,200; '' skips)")
    p.add_argument("--no-map", dest="embedding_map", action="store_false", default=None, help="skip the t-SNE map")


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
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


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
    flags = _flags(args, ("data_dir", "dataset", "synthetic", "offline", "like_threshold", "dim", "iterations", "seed", "min_likes", "metric",
                          "top_k", "queries", "dim_sweep", "embedding_map", "allow_modified_data"))
    if args.seed is not None:
        flags["holdout_seed"] = args.seed
    profile = MOVIES_PROFILES[args.profile or "default"]
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


#: `embedlab movies` flags that change results: refused with --resume (the RESUME_FLAGS are applied).
MOVIES_RESULT_FLAGS = ("out", "config", "profile", "dataset", "synthetic", "like_threshold", "dim", "iterations", "seed", "optimizers",
                       "lrs", "min_likes", "metric", "top_k", "queries", "dim_sweep", "embedding_map")


def _refuse_with_resume(args: argparse.Namespace, keys: Sequence[str]) -> None:
    """--resume continues with the saved settings: any of ``keys`` given on the command line is an error, not ignored."""
    refused = [flag_name(k) for k in keys if getattr(args, k, None) is not None]
    if refused:
        raise InputError(f"--resume continues {args.resume} with its saved settings, which {', '.join(refused)} would change; "
                         f"start a new run instead (--config {args.resume}/config.json repeats it with your changes)")


def resumed_movies_config(args: argparse.Namespace) -> MoviesConfig:
    """The stopped movie run's saved settings, with --data-dir, --offline and --allow-modified-data applied."""
    _refuse_with_resume(args, MOVIES_RESULT_FLAGS)
    run = RunDir.open(args.resume)
    saved = load_config_file(run.path / "config.json")
    if "study" in saved or not isinstance(saved.get("movies"), dict):
        raise InputError(f"{run.path} was not made by 'embedlab movies'; resume it with the command that made it")
    section = {k: v for k, v in saved["movies"].items() if k != "resolved"}
    return apply_overrides(MoviesConfig(), {**section, **_flags(args, ("data_dir", "offline", "allow_modified_data"))})


def _movies_finished(path: Path) -> bool:
    done = RunDir.open(path).metrics().get("movies_run", {})
    return "total_seconds" in done and "status" not in done


def on_ranks(backend_device: str, main_folder: Callable[[], RunDir], body: Callable[[RunDir, Any], int]) -> int:
    """``body(run, dist)`` once, or on every rank of a torchrun job: rank 0 in ``main_folder()``, the others
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
            return body(run, dist)
        finally:
            run.release()
            if not dist.is_main:  # a scratch folder this rank created itself
                shutil.rmtree(run.path, ignore_errors=True)
    finally:
        shutdown(dist)


def _quiet_unless_main(dist: Any) -> Callable[[str], None]:
    return print if dist.is_main else (lambda _msg: None)


def cmd_movies(args: argparse.Namespace) -> int:
    """The movie study; under torchrun every rank runs it in lockstep and rank 0 alone keeps a run folder."""
    cfg = resumed_movies_config(args) if args.resume else movies_config(args)
    if args.resume and _movies_finished(args.resume):
        print(f"{args.resume} already holds a finished movie study; nothing to resume (its report: {args.resume / 'report.html'})")
        return 0
    return on_ranks("cpu", lambda: _movies_folder(args), lambda run, dist: _movies_on_rank(cfg, run, dist))


def _movies_folder(args: argparse.Namespace) -> RunDir:
    """Rank 0's run folder: new, or the one resumed with its failure mark cleared."""
    if not args.resume:
        return _start_run(args, "movies")
    run = RunDir.open(args.resume, write=True)
    metrics = run.metrics()
    metrics.get("movies_run", {}).pop("status", None)
    run.write_json("metrics.json", metrics)
    print(f"resuming {run.path}: the movie study runs again with its saved settings")
    return run


def _movies_on_rank(cfg: MoviesConfig, run: RunDir, dist: Any) -> int:
    from embedlab.movies.pipeline import run_movies
    from embedlab.report import write_report

    try:
        metrics = run_movies(cfg, run, _quiet_unless_main(dist), dist)
    except BaseException as exc:
        _mark_failed(run, exc)
        raise
    if not dist.is_main:
        return 0
    report = write_report(run)
    fit = metrics["movies_fit"]
    print(f"best run: {fit['best_optimizer']} lr={fit['best_lr']:g}, gap to spectral optimum {100 * fit['best_gap_to_optimum']:.3f} %")
    for key, titles in metrics["movies_recommend"].items():
        if key.startswith("top"):
            print(f"{key}: " + "; ".join(titles))
    print(f"report: {report}")
    return 0


def _mark_failed(run: RunDir, exc: BaseException) -> None:
    """A run that stopped is never left looking complete: metrics.json says so. A folder in which nothing was computed
    gets no metrics.json: it holds no result, so the next run may use it again."""
    if not (run.path / "metrics.json").exists():
        return
    try:
        run.update_metrics("movies_run", {"status": f"{'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}: "
                                                     f"{failure_text(exc)}"})
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
    print(f"Top {len(table)} for {table.attrs['query']} ({table.attrs['metric']}, movies with >= {table.attrs['min_likes']} likes):")
    print(table.to_string(index=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from embedlab.report import write_report

    report = write_report(RunDir.open(args.run, write=True))
    print(f"report: {report} and {report.with_suffix('.html')} ({report.with_suffix('.html').stat().st_size / 1e6:.1f} MB)")
    return 0


def _add_probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default: $EMBEDLAB_DATA_DIR, else ./data)")
    p.add_argument("--offline", action="store_true", default=None, help="never download; fail if the data is missing")
    p.add_argument("--out", type=Path, help="run folder to create (default: runs/<timestamp>-probe)")
    p.add_argument("--config", help="JSON file of settings (same keys as a run's config.json 'probe' section)")
    p.add_argument("--profile", choices=sorted(PROBE_PROFILES), default="default", help="preset sizes (smoke: small subsets, for checks)")
    p.add_argument("--backbone", help=BACKBONE_HELP)
    p.add_argument("--weights", help="imagenet (default), none (random init) or a path to a state-dict file")
    p.add_argument("--size", type=int, help="input resolution in pixels (default: native 224 on a GPU, --cpu-size on a CPU)")
    p.add_argument("--cpu-size", type=int, help="resolution used on a CPU when --size is not given (default 128)")
    p.add_argument("--batch-size", type=int, help="extraction batch size (default: 16 on a CPU, measured fastest; 128 on a GPU)")
    p.add_argument("--device", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--seed", type=int, help="seed of the validation split and subsets")
    p.add_argument("--val-per-class", type=int, help="validation images per class carved from training (default 500)")
    p.add_argument("--train-per-class", type=int, help="use at most this many training images per class (default all)")
    p.add_argument("--test-per-class", type=int, help="use at most this many test images per class (default all)")
    p.add_argument("--l2-grid", type=_floats, metavar="A,B,...", help="L2 strengths tried on the validation split")
    p.add_argument("--cache-dir", help="feature cache (default: $EMBEDLAB_CACHE_DIR, else ~/.cache/embedlab)")


def probe_config(args: argparse.Namespace) -> ProbeConfig:
    """defaults < profile < --config file < flags."""
    flags = _flags(args, ("data_dir", "offline", "backbone", "weights", "size", "cpu_size", "batch_size", "device", "seed",
                          "val_per_class", "train_per_class", "test_per_class", "l2_grid", "cache_dir"))
    return _layered(ProbeConfig(), PROBE_PROFILES[args.profile], args.config, "probe", flags)


def cmd_probe(args: argparse.Namespace) -> int:
    cfg = probe_config(args)
    run = _start_run(args, "probe")
    from embedlab.report import write_report
    from embedlab.vision.pipeline import run_probe

    metrics = run_probe(cfg, run)["probe"]
    report = write_report(run)
    print(f"{metrics['backbone']} ({metrics['weights']}) at {metrics['resolution']} px: test accuracy {metrics['test_accuracy']:.4f} "
          f"(val {metrics['val_accuracy']:.4f}, L2 {metrics['l2']:g})")
    print(f"report: {report}")
    return 0


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default: $EMBEDLAB_DATA_DIR, else ./data)")
    p.add_argument("--offline", action="store_true", default=None, help="never download; fail if the data is missing")
    p.add_argument("--out", type=Path, help="run folder to create (default: runs/<timestamp>-finetune)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run folder from its last complete epoch")
    p.add_argument("--config", help="JSON file of settings (same keys as a run's config.json 'finetune' section)")
    p.add_argument("--profile", choices=["auto", *sorted(FINETUNE_PROFILES)], default="auto",
                   help="auto (default): the gpu recipe on CUDA, else the cpu recipe (~1 h on 2 cores); smoke: minutes")
    p.add_argument("--backbone", help=BACKBONE_HELP)
    p.add_argument("--weights", help="imagenet (default), none (random init) or a path to a state-dict file")
    p.add_argument("--size", type=int, help="training and test resolution in pixels (default: 224 on a GPU, --cpu-size on a CPU)")
    ft, gpu = FinetuneConfig(), FINETUNE_PROFILES["gpu"]
    p.add_argument("--cpu-size", type=int, help=f"resolution on a CPU when --size is not given (default {ft.cpu_size})")
    p.add_argument("--epochs", type=int, help=f"passes over the training images (cpu recipe {ft.epochs}, gpu recipe {gpu['epochs']})")
    p.add_argument("--batch-size", type=int, help=f"training batch size (cpu {ft.batch_size}, gpu {gpu['batch_size']})")
    p.add_argument("--eval-batch-size", type=int, help="validation and test batch size (default: 16 on a CPU, measured "
                   "fastest; 256 on a GPU); it does not change the predictions")
    p.add_argument("--optimizer", choices=["sgd", "adamw"],
                   help=f"adamw, or sgd with Nesterov momentum (cpu {ft.optimizer}, gpu {gpu['optimizer']})")
    p.add_argument("--lr", type=float, help=f"peak learning rate of the new head (cpu {ft.lr:g}, gpu {gpu['lr']:g})")
    p.add_argument("--backbone-lr-scale", type=float, help=f"backbone lr = lr x this, in (0, 1] (default {ft.backbone_lr_scale:g})")
    p.add_argument("--weight-decay", type=float, help=f"on weights only, never norm or bias parameters (default {ft.weight_decay:g})")
    p.add_argument("--label-smoothing", type=float, help=f"default {ft.label_smoothing:g}; 0 turns it off")
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each validation and test image's prediction with its mirror image's: 2 passes "
                   f"(default {'on' if ft.tta_flip else 'off'})")
    p.add_argument("--start-size", type=int, help="progressive resizing: the first epoch's resolution, rising linearly to --size")
    p.add_argument("--ema", type=float, help="evaluate an exponential moving average of the weights; its time constant as a "
                   "fraction of all training steps, e.g. 0.1 (default 0: off)")
    p.add_argument("--head-init", choices=["auto", "random", "probe"], help="probe: start the new classifier from the linear "
                   "probe's weights (LP-FT); random; auto (default): probe unless --no-probe")
    p.add_argument("--pad", type=int, help=f"random-crop augmentation: padding in pixels at 32 px, see --pad-mode (default {ft.pad}; 0: flips only)")
    p.add_argument("--pad-mode", choices=["zeros", "reflect"], help="the random crop's padding: zeros, or the image "
                   f"reflected at its border (default {ft.pad_mode})")
    p.add_argument("--flip", choices=["random", "alternate"], help="training flips: a coin toss per image and epoch "
                   f"(random), or alternate: drawn once, then the other way each epoch (default {ft.flip})")
    p.add_argument("--warmup-fraction", type=float, help="share of the steps spent warming up linearly (default 0.1)")
    p.add_argument("--schedule", choices=["cosine", "onecycle"], help="after warm-up: cosine to zero (default) or one-cycle")
    p.add_argument("--train-scope", choices=["all", "last"], help="all layers (default) or the last stage and the head only")
    p.add_argument("--freeze-stages", type=int, help="with --train-scope all: keep the stem and the stages after it, K in all, "
                   "frozen (default: none on a GPU; on a CPU the backbone's own, 3 for efficientnet_lite1, 4 for lite2, else 0)")
    p.add_argument("--device", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--seed", type=int, help="seed of the split, the new head and the data order")
    p.add_argument("--val-per-class", type=int, help="validation images per class (default 500, the probe's split)")
    p.add_argument("--train-per-class", type=int, help="use at most this many training images per class (default all)")
    p.add_argument("--test-per-class", type=int, help="use at most this many test images per class (default all)")
    p.add_argument("--no-probe", dest="probe", action="store_false", default=None, help="skip the linear probe (and the comparison)")
    p.add_argument("--probe-size", type=int, help="resolution of the comparison probe (default: its own, 128 px on a CPU)")
    p.add_argument("--cache-dir", help="feature cache for the probe (default: $EMBEDLAB_CACHE_DIR, else ~/.cache/embedlab)")


FINETUNE_FLAGS = ("data_dir", "offline", "backbone", "weights", "size", "cpu_size", "epochs", "batch_size", "eval_batch_size", "optimizer",
                  "lr", "tta_flip", "start_size", "ema", "head_init", "pad", "pad_mode", "flip",
                  "backbone_lr_scale", "weight_decay", "label_smoothing", "warmup_fraction", "schedule", "train_scope", "freeze_stages",
                  "device", "seed", "val_per_class", "train_per_class", "test_per_class", "probe", "probe_size", "cache_dir")


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """defaults < profile (auto: by device) < --config file < flags."""
    return _layered(FinetuneConfig(), finetune_profile(args.profile, wants_cuda(args.device)), args.config, "finetune",
                    _flags(args, FINETUNE_FLAGS))


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
        _refuse_with_resume(args, [k for k in (*FINETUNE_FLAGS, "out", "config") if k not in RESUME_FLAGS]
                            + (["profile"] if args.profile != "auto" else []))
        run = RunDir.open(args.resume)  # claimed by rank 0 in on_ranks
        saved = run.read_json("config.json").get("finetune", {})
        saved = {k: v for k, v in saved.items() if k != "resolved"} if isinstance(saved, dict) else {}
        if not saved:
            raise InputError(f"{run.path} holds no fine-tuning config; start a new run with --out")
        cfg = apply_overrides(FinetuneConfig(), {**saved, **_flags(args, [k for k in RESUME_FLAGS if hasattr(args, k)])}, "finetune")
        cfg.validate()
        print(f"resuming {run.path}")
        main_folder: Callable[[], RunDir] = run.claimed  # rank 0 alone writes into it
    else:
        cfg = finetune_config(args)
        main_folder = lambda: _start_run(args, "finetune")  # noqa: E731
    return on_ranks(_backend_device(cfg.device), main_folder, lambda r, dist: _finetune_on_rank(cfg, r, bool(args.resume), dist))


def _finetune_on_rank(cfg: FinetuneConfig, run: RunDir, resume: bool, dist: Any) -> int:
    from embedlab.report import write_report
    from embedlab.vision.pipeline import run_finetune

    metrics = run_finetune(cfg, run, _quiet_unless_main(dist), resume=resume, dist=dist)
    if not dist.is_main:
        return 0
    report = write_report(run)
    ft = metrics["finetune"]
    print(f"fine-tuned {ft['backbone']} at {ft['resolution']} px: test accuracy {ft['test_accuracy']:.4f} "
          f"({ft['train_seconds'] / 60:.1f} min of training, {ft['epochs']} epochs)")
    if "probe" in metrics:
        print(f"fixed features (linear probe) at {metrics['probe']['resolution']} px: test accuracy {metrics['probe']['test_accuracy']:.4f}")
    print(f"report: {report}")
    return 0


#: Flags that say where and how, not what: a resumed run applies them; any other flag is refused with --resume.
RESUME_FLAGS = ("data_dir", "offline", "device", "cache_dir", "allow_modified_data")


def _resumed_study(args: argparse.Namespace) -> tuple[RunDir, Any]:
    """The saved run and its exact config, with the flags that do not change results applied."""
    from embedlab.study import study_config

    _refuse_with_resume(args, ("profile", "backbone", "weights", "steps", "out"))
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
    cfg = study_config(study["profile"], False, _flags(args, RESUME_FLAGS), {**sections, "steps": study["steps"]})
    print(f"resuming {run.path}")
    return run, cfg


def _as_section(value: Any, name: str, source: str | Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"section {name!r} of {source} must be a JSON object of settings, got {value!r}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: every mission item into one run folder, then report.md and report.html."""
    from embedlab.study import PROFILES, study_config

    if args.resume:
        run, cfg = _resumed_study(args)
        main_folder: Callable[[], RunDir] = run.claimed  # rank 0 alone writes into it
    else:
        shared = _flags(args, ("data_dir", "offline", "backbone", "weights", "device", "cache_dir", "steps", "allow_modified_data"))
        sections = check_sections(load_config_file(args.config), args.config) if args.config else {}
        saved_study = _as_section(sections.get("study", {}), "study", args.config)
        if "steps" in saved_study and "steps" not in sections:  # a run's config.json: repeat its steps too
            sections["steps"] = saved_study["steps"]
        profile = args.profile or saved_study.get("profile", "auto")
        if not isinstance(profile, str) or profile not in PROFILES:
            raise InputError(f"study.profile in {args.config} is {profile!r}; choose from {', '.join(PROFILES)}")
        cfg = study_config(profile, wants_cuda(args.device), shared, sections)
        main_folder = lambda: _start_run(args, "study")  # noqa: E731
    return on_ranks(_backend_device(cfg.finetune.device), main_folder, lambda r, dist: _study_on_rank(cfg, r, bool(args.resume), dist))


def _study_on_rank(cfg: Any, run: RunDir, resume: bool, dist: Any) -> int:
    from embedlab.report import summary_rows, write_report
    from embedlab.study import run_study

    metrics = run_study(cfg, run, _quiet_unless_main(dist), resume=resume, dist=dist)
    if not dist.is_main:
        return 0
    report = write_report(run)
    print("\nsummary:")
    for step, status, minutes, headline in summary_rows(metrics):
        print(f"  {step:<9} {status:<7} {minutes:>6} min  {headline}")
    print(f"report: {report.with_suffix('.html')} (and {report.name})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embedlab", description=__doc__.splitlines()[0],
                                     epilog="--debug anywhere on the line shows the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"embedlab {importlib.metadata.version('embedlab')}")
    sub = parser.add_subparsers(dest="command", required=True)
    prun = sub.add_parser("run", help="the main job: Part 1 A-C and Part 2 A-C into one run folder, with report.html")
    prun.add_argument("--profile", choices=["auto", "cpu", "gpu", "smoke"],
                      help="auto (default): gpu on CUDA, else cpu; smoke: small subsets (measured times: README, 'The main job')")
    prun.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ and ml-latest-small/ (default: $EMBEDLAB_DATA_DIR, else ./data)")
    prun.add_argument("--offline", action="store_true", default=None, help="never download; fail if data or weights are missing")
    prun.add_argument("--allow-modified-data", action="store_true", default=None,
                      help="use ml-latest-small files that differ from the official release (recorded in metrics.json and the report)")
    prun.add_argument("--out", type=Path, help="run folder to create (default: runs/<timestamp>-study)")
    prun.add_argument("--resume", type=Path, metavar="RUN", help="continue a stopped run folder: finished steps are kept")
    prun.add_argument("--config", help="JSON file with 'probe', 'finetune', 'movies' sections (a run's config.json works)")
    prun.add_argument("--backbone", help=BACKBONE_HELP)
    prun.add_argument("--weights", help="imagenet (default), none, or a local state-dict file (e.g. resnet18-f37072fd.pth)")
    prun.add_argument("--device", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    prun.add_argument("--cache-dir", help="feature cache (default: $EMBEDLAB_CACHE_DIR, else ~/.cache/embedlab)")
    prun.add_argument("--steps", type=lambda t: [s.strip() for s in t.split(",") if s.strip()], metavar="A,B",
                      help="subset of probe,finetune,movies (default all)")
    prun.set_defaults(func=cmd_run)
    pm = sub.add_parser("movies", help="Part 2: movie embeddings from MovieLens co-likes, into a run folder")
    _add_movies_args(pm)
    pm.set_defaults(func=cmd_movies)
    pv = sub.add_parser("vision", help="Part 1: CIFAR-10 transfer learning")
    vsub = pv.add_subparsers(dest="vision_command", required=True)
    pp = vsub.add_parser("probe", help="frozen features + logistic regression + galleries, into a run folder")
    _add_probe_args(pp)
    pp.set_defaults(func=cmd_probe)
    pf = vsub.add_parser("finetune", help="fine-tune the backbone, evaluate, gallery, compare with the probe, into a run folder")
    _add_finetune_args(pf)
    pf.set_defaults(func=cmd_finetune)
    pr = sub.add_parser("recommend", help="top-k similar movies from a saved movies run")
    pr.add_argument("title", help="movie title, e.g. 'Toy Story' or 'Matrix, The (1999)'")
    pr.add_argument("--run", required=True, help="a run folder written by 'embedlab movies'")
    pr.add_argument("--top", type=int, default=10, help="how many (default 10)")
    pr.add_argument("--metric", choices=["cosine", "dot"], help="default: the run's")
    pr.add_argument("--min-likes", type=int, help="default: the run's")
    pr.set_defaults(func=cmd_recommend)
    prep = sub.add_parser("report", help="render report.md and report.html again from a run folder's saved results")
    prep.add_argument("run", help="a run folder")
    prep.set_defaults(func=cmd_report)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one ``embedlab: error:`` line like every other error (usage only with --help)."""

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line: the full traceback instead of the one-line message
    try:
        args = build_parser().parse_args([a for a in argv if a != "--debug"])
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
        return 130
    finally:
        RunDir.release_all()


if __name__ == "__main__":
    sys.exit(main())
