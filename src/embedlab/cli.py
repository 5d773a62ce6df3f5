"""The command line: flags generated from the settings' declarations -> typed configs -> the studies -> short summaries.

Every expected failure (missing data, bad flag, unknown title, existing run folder) ends with
one readable ``embedlab: error: ...`` message and exit status 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from embedlab.allocator import keep_freed_memory
from embedlab.commands import (
    EXPECTED_ERRORS,
    cmd_finetune,
    cmd_movies,
    cmd_predict,
    cmd_probe,
    cmd_recommend,
    cmd_report,
    cmd_run,
)
from embedlab.config import FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.errors import GO_ON, InputError, failure_text
from embedlab.files import NO_SPACE, disk_full
from embedlab.flags import STUDY_CLASSES, add_run_folder_args, add_setting_flags, once
from embedlab.logs import console
from embedlab.runs import RunDir
from embedlab.schema import settings_of

#: What each command does for its user: the first lines of its --help.
DESCRIPTIONS = {
    "embedlab": (
        "Two representation-learning studies with a readable report: how ImageNet features transfer to CIFAR-10 "
        "(a linear probe on frozen features, then fine-tuning), and movie embeddings fitted to MovieLens co-likes "
        "that recommend films by title. Start with: embedlab run --data-dir DATA"
    ),
    "run": (
        "Run both studies into one run folder: the linear probe and its galleries, fine-tuning and the comparison, the"
        " movie embeddings and their recommendations; then open report.html. Works offline: --backbone auto picks"
        " ResNet-18 when its weights are at hand, else the best offline backbone."
    ),
    "movies": (
        "Build the co-like matrix from MovieLens, fit movie embeddings by gradient descent with several optimisers and "
        "learning rates, compare them with the exact optimum, recommend movies and check them on held-out users."
    ),
    "vision": "CIFAR-10 transfer learning from an ImageNet-pretrained network: the linear probe, or fine-tuning.",
    "probe": (
        "Extract features with the frozen network, fit a logistic regression on them, and show the most confident right"
        " and wrong test predictions of every class."
    ),
    "finetune": (
        "Fine-tune the pretrained network on CIFAR-10, evaluate it as the probe is evaluated, and compare the two."
    ),
    "recommend": (
        "The movies most similar to TITLE in a finished run's embedding. Titles are found as people type them: "
        "case, a leading article and the year are optional."
    ),
    "predict": (
        "Classify your own images with a finished run's models: each image's most probable CIFAR-10 classes under the"
        " linear probe and the fine-tuned network. Any image file PIL reads, of any size or mode, is made RGB and"
        " 32 x 32 as CIFAR-10's images are. Nothing is downloaded or written."
    ),
    "report": "Render report.md and report.html again from a run folder's saved results (nothing is recomputed).",
}


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags; the settings' flags are generated from their declarations in ``embedlab.config``."""
    parser = _Parser(
        prog="embedlab",
        description=DESCRIPTIONS["embedlab"],
        epilog="--debug anywhere on the line shows the full traceback of an error",
    )
    parser.add_argument("--version", action="version", version=f"embedlab {importlib.metadata.version('embedlab')}")
    sub = parser.add_subparsers(dest="command", required=True)
    output = _Parser(add_help=False)  # on every command
    loudness = output.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print warnings, errors and the results only")
    loudness.add_argument("-v", "--verbose", action="store_true", help="print debugging detail too")
    _add_run(sub, output)
    _add_studies(sub, output)
    _add_readers(sub, output)
    return parser


def _add_run(sub: Any, output: argparse.ArgumentParser) -> None:
    """``embedlab run``: the main job, with the settings of every study it runs (a shared one once)."""
    prun = sub.add_parser(
        "run",
        parents=[output],
        help="the main job: both studies into one run folder, with report.html",
        description=DESCRIPTIONS["run"],
    )
    add_run_folder_args(
        prun, "study", "continue a stopped run folder: finished steps are kept, fine-tuning resumes from its last epoch"
    )
    prun.add_argument(
        "--steps",
        type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
        metavar="A,B",
        help="subset of probe,finetune,movies (default all)",
    )
    added: set[str] = set()
    for cls in STUDY_CLASSES.values():  # each study's settings that the main job offers, a shared one once
        names = [f.name for f in settings_of(cls) if f.metadata["run"] and f.name not in added]
        add_setting_flags(prun, cls, names)
        added.update(names)
    prun.set_defaults(func=cmd_run)


def _add_studies(sub: Any, output: argparse.ArgumentParser) -> None:
    """``embedlab movies``, ``embedlab vision probe`` and ``embedlab vision finetune``: one study each."""
    pm = sub.add_parser(
        "movies",
        parents=[output],
        help="movie embeddings from MovieLens co-likes, recommendations and their checks, into a run folder",
        description=DESCRIPTIONS["movies"],
    )
    add_run_folder_args(pm, "movies", "run a stopped 'embedlab movies' folder again with its saved settings")
    add_setting_flags(pm, MoviesConfig)
    pm.set_defaults(func=cmd_movies)
    pv = sub.add_parser(
        "vision",
        parents=[output],
        help="CIFAR-10 transfer learning: the linear probe, or fine-tuning",
        description=DESCRIPTIONS["vision"],
    )
    vsub = pv.add_subparsers(dest="vision_command", required=True)
    pp = vsub.add_parser(
        "probe",
        parents=[output],
        help="frozen features + logistic regression + galleries, into a run folder",
        description=DESCRIPTIONS["probe"],
    )
    add_run_folder_args(pp, "probe", None)
    add_setting_flags(pp, ProbeConfig)
    pp.set_defaults(func=cmd_probe)
    pf = vsub.add_parser(
        "finetune",
        parents=[output],
        help="fine-tune the backbone, evaluate, gallery, compare with the probe, into a run folder",
        description=DESCRIPTIONS["finetune"],
    )
    add_run_folder_args(pf, "finetune", "continue an interrupted run folder from its last complete epoch")
    add_setting_flags(pf, FinetuneConfig)
    pf.set_defaults(func=cmd_finetune)


def _add_readers(sub: Any, output: argparse.ArgumentParser) -> None:
    """``embedlab recommend``, ``embedlab predict`` and ``embedlab report``: they read a finished run folder."""
    pr = sub.add_parser(
        "recommend",
        parents=[output],
        help="top-k similar movies from a finished run's embedding",
        description=DESCRIPTIONS["recommend"],
    )
    pr.add_argument("title", help="movie title, e.g. 'Toy Story' or 'Matrix, The (1999)'")
    pr.add_argument("--run", required=True, metavar="RUN", help="a run folder holding a finished movie study")
    pr.add_argument("--top", type=int, default=10, help="how many (default 10)")
    pr.add_argument("--metric", choices=["cosine", "dot"], help="default: the run's")
    pr.add_argument("--min-likes", type=int, help="default: the run's")
    pr.set_defaults(func=cmd_recommend)
    pp = sub.add_parser(
        "predict",
        parents=[output],
        help="classify image files with a finished run's probe and fine-tuned network",
        description=DESCRIPTIONS["predict"],
    )
    pp.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    pp.add_argument("--run", required=True, metavar="RUN", help="a run folder holding a finished vision study")
    pp.add_argument(
        "--model", choices=["probe", "finetuned", "both"], default="both", help="which model answers (default both)"
    )
    pp.add_argument("--top", type=int, default=3, help="how many classes per image (default 3)")
    pp.set_defaults(func=cmd_predict)
    prep = sub.add_parser(
        "report",
        parents=[output],
        help="render report.md and report.html again from a run folder's saved results",
        description=DESCRIPTIONS["report"],
    )
    prep.add_argument("folder", nargs="?", metavar="RUN", help="a run folder (or --run RUN)")
    prep.add_argument("--run", metavar="RUN", help="a run folder")
    prep.set_defaults(func=cmd_report)


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one ``embedlab: error:`` line like every other error (usage only with --help), and
    whose single-valued flags may be given once (``once``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, action in (
            (None, argparse._StoreAction),
            ("store", argparse._StoreAction),
            ("store_true", argparse._StoreTrueAction),
            ("store_false", argparse._StoreFalseAction),
        ):
            self.register("action", name, once(action))

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "embedlab" else f"{self.prog}: "  # the line already starts "embedlab: error:"
        raise CommandLineError(f"{where}{message} (see '{self.prog} --help')")


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with a flag its command does not know named with that command and its closest flags."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        import difflib

        sub = parser
        for name in (args.command, getattr(args, "vision_command", None)):
            choices = next((a.choices for a in sub._actions if isinstance(a, argparse._SubParsersAction)), {})
            sub = choices.get(name, sub) if name else sub
        flags = [f for a in sub._actions for f in a.option_strings if f.startswith("--")]
        named = [u.split("=")[0] for u in unknown if u.startswith("-")] or unknown
        close = difflib.get_close_matches(named[0], flags, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise CommandLineError(f"{sub.prog} does not know {', '.join(named)}{hint} (see '{sub.prog} --help')")
    return args


class CommandLineError(InputError):
    """A flag argparse could not parse."""


def one_line(text: str) -> str:
    """A message of several lines as one line: the items of a list (the lines after one that ends in a colon) are
    separated by "; ", so that titles and paths stay apart; other lines join with a space."""
    out, in_list = "", False
    for line in (" ".join(raw.split()) for raw in text.splitlines()):
        if not line:
            continue
        out = line if not out else out + ("; " if in_list and not out.endswith(":") else " ") + line
        in_list = in_list or line.endswith(":")
    return out


def _error_line(kind: str, text: str) -> None:
    """One line on stderr, written with one system call, so the ranks of a torchrun job never run their lines
    together."""
    world = os.environ.get("WORLD_SIZE", "1")
    where = f"[rank {os.environ.get('RANK', '?')}] " if world.isdigit() and int(world) > 1 else ""
    line = f"embedlab: {kind}: {where}{one_line(text)}\n"
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
    return (
        isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)
    )


def _loudness(args: argparse.Namespace) -> int:
    """The console's logging level: --quiet, --verbose, or info; the other ranks of a torchrun job print warnings
    only."""
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
    raise Terminated(f"terminated (SIGTERM); finished steps are saved in the run folder; {GO_ON}")


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
    try:
        with _sigterm_as_interrupt():
            return _main(argv)
    except BrokenPipeError:  # the output went to a pipe that was closed early (`| head`): not an error of embedlab's
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush does not fail too
        return 0


def _main(argv: list[str]) -> int:
    # figures go to files: no window, and no GUI toolkit in the sweep's threads
    os.environ.setdefault("MPLBACKEND", "Agg")
    keep_freed_memory()  # the command owns this process: a training step reuses the last one's pages (allocator.py)
    debug = "--debug" in argv  # anywhere on the line: the full traceback instead of the one-line message
    try:
        args = _parse([a for a in argv if a != "--debug"])
        with console(_loudness(args)):
            return int(args.func(args))
    except EXPECTED_ERRORS as exc:
        if debug:
            raise
        _error_line("error", str(exc))
        return 2
    # out of memory is the machine's limit, not a bug: any other RuntimeError is
    except (MemoryError, RuntimeError) as exc:
        if debug or not _out_of_memory(exc):
            raise
        _error_line(
            "error",
            f"out of memory ({failure_text(exc)[:160]}); use smaller sizes (--batch-size, --dim, --top, a smaller "
            "dataset) or a machine with more memory; finished steps are kept in the run folder",
        )
        return 2
    except OSError as exc:  # a full disk outside embedlab's own writers (a library's temporary file, say)
        if debug or exc.errno not in NO_SPACE:
            raise
        _error_line("error", str(disk_full(Path(exc.filename or Path.cwd() / "?"), None)))
        return 2
    except KeyboardInterrupt as exc:
        _error_line("interrupted", str(exc) or f"finished steps are saved in the run folder; {GO_ON}")
        return 143 if _SIGTERM_SEEN else 130  # 128 + the signal's number, as a shell reports it
    finally:
        RunDir.release_all()


if __name__ == "__main__":
    sys.exit(main())
