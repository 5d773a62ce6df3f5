"""A step's output, and the one place it is written into a run folder and read back.

A step returns an ``Output``: its typed results (the sections of ``metrics.json``) and the tables, figures and
artefacts it made, each under a name its result type declares in ``FILES``. The runner hands it to ``write`` (or
``Store.write``); the step itself takes no run folder and writes no file, so it can run, and be tested, in memory.
A ``Store`` is also what a runner reads a resumed run's finished steps back through (``results``, ``predictions``,
``lp_ft_probe``).

Results go into their sections of ``metrics.json`` (``save``, and ``load`` reads the whole file back as a typed
``RunResults``) by the storage rules ``results`` describes.

Example::

    >>> out = Output(results=(DimChoice(chosen_by_rule=32, configured_dim=32),),   # doctest: +SKIP
    ...              tables={"dim_sweep": Table(df)}, figures={"dim_sweep": fig})
    >>> write(run, out)
    >>> load(run).movies_dim_sweep.chosen_by_rule
    32
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pydantic

from embedlab import reader
from embedlab.errors import InputError, MissingFileError
from embedlab.files import UnreadableFile, npz_bytes, read_torch
from embedlab.results import Files, MoviesRun, RunResults, Steps, StepStatus, files_of
from embedlab.runs import RunDir
from embedlab.text import markdown_table

#: The probe fitted on the training split alone: what LP-FT starts the fine-tuned head from.
LP_FT_PROBE = "probe_model_train_only.pt"
METRICS = "metrics.json"

T = TypeVar("T")


def _inline(cls: type) -> tuple[str, ...]:
    return getattr(cls, "INLINE", ())


def to_section(result: Any) -> dict[str, Any]:
    """The JSON object one result is stored as (nested ``INLINE`` results side by side, ``spread`` mappings item by
    item)."""
    out: dict[str, Any] = {}
    for f in fields(result):
        value = getattr(result, f.name)
        if f.name in _inline(type(result)) and dataclasses.is_dataclass(value):
            out.update(to_section(value))
            continue
        if f.metadata.get("spread"):
            out.update({k: _plain(v) for k, v in value.items()})
        elif value is None and f.default is None:
            continue  # left at its None default: not stored, as a step that does not measure it writes nothing
        else:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_section(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _claimed(cls: type) -> set[str]:
    """The keys of a section that a result's non-spread fields (inline ones included) read."""
    out: set[str] = set()
    types = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.metadata.get("spread"):
            continue
        if f.name in _inline(cls):
            out |= _claimed(types[f.name])
        else:
            out.add(f.name)
    return out


def _nest(cls: type, section: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``to_section``: the constructor arguments of ``cls`` from its stored section."""
    types = typing.get_type_hints(cls)
    claimed = _claimed(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.metadata.get("spread"):
            out[f.name] = {k: v for k, v in section.items() if k not in claimed}
        elif f.name in _inline(cls):
            out[f.name] = _nest(types[f.name], section)
        elif f.name in section:
            out[f.name] = section[f.name]
    return out


def from_section(cls: type[T], section: dict[str, Any]) -> T | None:
    """The result stored in ``section``; None when the step has not finished (a field without default is missing).
    A value of the wrong type means the file was edited: an error that says so."""
    if not isinstance(section, dict):
        raise InputError(
            f"{METRICS}: a section is not a JSON object; the file was edited. Restore it, or start a new run"
        )
    args = _nest(cls, section)
    name = getattr(cls, "SECTION", cls.__name__)
    try:
        value = pydantic.TypeAdapter(cls).validate_python(args)
    except pydantic.ValidationError as exc:
        if all(e["type"] == "missing" for e in exc.errors()):
            return None
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise InputError(
            f"{METRICS} has an unreadable {name!r} section ({where}); it was edited. Restore it, or start a new run"
        ) from None
    # as strictly as config.json: a value is read only as written ("610" or true for a count, NaN for a fraction:
    # edited), so the section the result would be written as must be the one that was read
    for key, written in to_section(value).items():
        if key in section and not reader.same_json(section[key], written):
            raise InputError(
                f"{METRICS} has an unreadable {name!r} section ({key}: {json.dumps(section[key])} is not what "
                f"embedlab writes there); it was edited. Restore it, or start a new run"
            )
    return value


def load(run: RunDir) -> RunResults:
    """Every finished step's result in the run folder, typed."""
    metrics = run.metrics()
    types = typing.get_type_hints(RunResults)
    found = {}
    for name, hint in types.items():
        cls = next(a for a in getattr(hint, "__args__", (hint,)) if a is not type(None))
        if name in metrics:
            value = from_section(cls, metrics[name])
            if value is not None:
                found[name] = value
    return RunResults(**found)


def save(run: RunDir, result: Any) -> None:
    """Merge ``result`` into its section of metrics.json (atomically; the other sections are kept)."""
    run.update_metrics(type(result).SECTION, to_section(result))


def mark_stopped(run: RunDir, status: str | None) -> None:
    """Say in ``movies_run`` that the movie study stopped (``"failed: …"``), or clear that mark (None) when it
    resumes."""
    metrics = run.metrics()
    section = {k: v for k, v in metrics.get(MoviesRun.SECTION, {}).items() if k != "status"}
    metrics[MoviesRun.SECTION] = section if status is None else {**section, "status": status}
    run.write_json(METRICS, metrics)


def save_step(run: RunDir, step: str, status: StepStatus) -> None:
    """Record one step's status in the ``steps`` section (replacing its earlier status)."""
    run.update_metrics(Steps.SECTION, {step: to_section(status)})


@dataclass(frozen=True)
class Table:
    """A table of the run: ``tables/<name>.csv``, with a Markdown copy beside it for reading on GitHub. The report
    renders every table from its CSV (in the number format its result type declares), never from the copy."""

    df: pd.DataFrame


@dataclass(frozen=True)
class Predictions:
    """One model's saved test predictions: class probabilities, labels and the test indices they belong to."""

    probs: Any  # torch.Tensor (n, classes)
    labels: Any  # torch.Tensor (n,)
    test_index: Any  # np.ndarray (n,)
    source: str  # where they came from, for messages

    def npz(self) -> bytes:
        """``<model>_test_probs.npz`` as the run folder holds it."""
        return npz_bytes(probs=self.probs.numpy(), labels=self.labels.numpy(), test_index=self.test_index)


@dataclass(frozen=True)
class Output:
    """What one step produced for the run folder.

    ``results`` are typed result sections; ``tables``, ``figures`` (matplotlib figures) and ``artefacts`` (bytes, text,
    or a DataFrame stored as CSV) are keyed by the names the results' types declare in ``FILES`` (or ``owner``'s, for a
    step whose numbers live in another step's section). An undeclared name is a programming error, raised here.
    """

    results: tuple[Any, ...] = ()
    tables: Mapping[str, Table] = field(default_factory=dict)
    figures: Mapping[str, Any] = field(default_factory=dict)
    artefacts: Mapping[str, bytes | str | pd.DataFrame | Predictions] = field(default_factory=dict)
    owner: type | None = None

    def __post_init__(self) -> None:
        declared = Files.union(
            files_of(t) for t in {type(r) for r in self.results} | ({self.owner} if self.owner else set())
        )
        for kind in ("tables", "figures", "artefacts"):
            for name in getattr(self, kind):
                if not declared.allows(kind, name):
                    raise ValueError(
                        f"{kind[:-1]} {name!r} is not declared in the FILES of"
                        f" {[t.__name__ for t in map(type, self.results)]}"
                    )


def write(run: RunDir, out: Output) -> None:
    """Every file of ``out``, each written under a temporary name and renamed; then its results into metrics.json."""
    for name, t in out.tables.items():
        run.save_table(name, t.df, declared().table_format(name))
    for name, fig in out.figures.items():
        run.save_figure(name, fig)
    for name, data in out.artefacts.items():
        if isinstance(data, Predictions):
            data = data.npz()
        run.save_artefact(name, data.to_csv(index=False) if isinstance(data, pd.DataFrame) else data)
    for result in out.results:
        save(run, result)


def writer(run: RunDir) -> Callable[[Output], None]:
    """``write`` into ``run``: what a study's runner is handed, so that it never holds the run folder itself."""
    return functools.partial(write, run)


@functools.cache
def declared() -> Files:
    """Every table, figure and artefact name a result type declares (``results.Files``): the only names the store
    reads."""
    hints = typing.get_type_hints(RunResults)
    return Files.union(files_of(a) for hint in hints.values() for a in typing.get_args(hint) or (hint,))


def _declared(kind: str, name: str) -> str:
    if not declared().allows(kind, name):
        raise ValueError(f"{kind[:-1]} {name!r} is not declared in the FILES of any result type")
    return name


class Store:
    """A run folder as a study's runner sees it: write a step's output, record a study's settings, and read back what
    finished steps left there (a resumed run, the comparison of two studies run apart)."""

    def __init__(self, run: RunDir):
        self.run = run
        self._results: RunResults | None = None  # read once, then kept up to date by write() and step()
        self._predictions: dict[str, Predictions] = {}  # those written by this process, kept in memory

    @property
    def path(self) -> Path:
        return self.run.path

    def write(self, out: Output) -> None:
        write(self.run, out)
        self._predictions |= {k: v for k, v in out.artefacts.items() if isinstance(v, Predictions)}
        if out.results:
            self._results = None  # a section merges into metrics.json: read once more when next asked

    def step(self, name: str, status: StepStatus) -> None:
        """Record a step of the main job as running, done, failed or interrupted."""
        save_step(self.run, name, status)
        if self._results is not None:
            steps = {**self._results.steps.steps, name: status}
            self._results = dataclasses.replace(self._results, steps=Steps(steps))

    def settings(self, section: str, values: dict[str, Any]) -> None:
        """One study's settings as it runs them, into config.json (what --config and --resume repeat)."""
        self.run.update_config(section, values)

    def results(self) -> RunResults:
        """Every finished step's result in the run, as of the last write."""
        if self._results is None:
            self._results = load(self.run)
        return self._results

    def table(self, name: str) -> pd.DataFrame | None:
        """A table of the run (its CSV), or None when the step that makes it has not run."""
        rel = f"tables/{_declared('tables', name)}.csv"
        path = self.regular_file(rel)
        return None if path is None else reader.read_table(path, f"{rel} in {self.path}")

    def table_markdown(self, name: str) -> str | None:
        """A table as the report shows it: its CSV through ``text.markdown_table``, the one escaping path, in the
        format its result type declares; None when the run does not hold it. The Markdown copy in ``tables/`` is never
        read: a cell edited there cannot put markup into the report."""
        df = self.table(name)
        return None if df is None else markdown_table(df, declared().table_format(name))

    def has_figure(self, name: str) -> bool:
        """Whether the run holds ``figures/<name>.png`` as a PNG file of its own (the report links it by that path)."""
        return self.figure_png(name) is not None

    def figure_png(self, name: str) -> bytes | None:
        """``figures/<name>.png`` as bytes (the HTML report inlines them), or None when the run does not hold it as a
        PNG file of its own (``reader.png``: a link out of the folder, a folder, a file that is not a PNG is left out
        with a warning)."""
        return reader.png(self.path, f"figures/{_declared('figures', name)}.png")

    def regular_file(self, rel: str) -> Path | None:
        """``rel`` inside the run folder when it is a regular file of its own (``reader.regular_file``), else None."""
        return reader.regular_file(self.path, rel)

    def artefact(self, name: str) -> Path | None:
        """Where an artefact of the run lies, or None when it was not saved (or is not a file of the run's own, see
        ``regular_file``)."""
        return self.regular_file(f"artefacts/{_declared('artefacts', name)}")

    def text(self, name: str) -> str | None:
        """config.json or environment.json as written, or None before the run wrote it."""
        if name not in ("config.json", "environment.json"):
            raise ValueError(f"{name!r} is not a text file of the run folder the store reads")
        path = self.regular_file(name)
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} cannot be read ({exc}); restore it, or start a new run") from None

    def environment(self) -> dict[str, str] | None:
        """environment.json (the software and machine a run used): a JSON object of texts and numbers, or None before
        the run wrote it. Anything else is an error that names the file."""
        text = self.text("environment.json")
        if text is None:
            return None
        return reader.environment(text, self.path / "environment.json")

    def typed_config(self, cls: type[T], section: str) -> T:
        """One study's settings from config.json, typed and checked as ``--config`` and ``--resume`` check them (a
        value of the wrong type, ``2.7`` or ``true`` for a count, is refused, never cut to fit)."""
        from embedlab.overrides import DERIVED, apply_overrides

        raw = {k: v for k, v in self.config(section).items() if k != DERIVED}
        return apply_overrides(cls(), raw, section)

    def profile(self) -> str | None:
        """The main job's profile (config.json's study section), or None for a folder another command made."""
        text = self.text("config.json")
        study = json.loads(text).get("study") if text is not None else None
        profile = study.get("profile") if isinstance(study, dict) else None
        return profile if isinstance(profile, str) else None

    def config(self, section: str) -> dict[str, Any]:
        """One study's saved settings (config.json)."""
        return self.run.config(section)

    def checkpoint(self) -> Path:
        """Where fine-tuning keeps its epoch checkpoint (the training loop is handed this path)."""
        return self.run.artefact("finetune_checkpoint.pt")

    def predictions(self, name: str) -> Predictions | None:
        """``<name>_test_probs.npz`` ("probe" or "finetune"): as written by this process, else read from the run folder
        (a resumed run, a study run apart); None when the run has none."""
        import numpy as np
        import torch

        if f"{name}_test_probs.npz" in self._predictions:
            return self._predictions[f"{name}_test_probs.npz"]
        path = self.artefact(f"{name}_test_probs.npz")
        if path is None:
            return None
        with np.load(path) as z:
            return Predictions(
                torch.from_numpy(z["probs"]), torch.from_numpy(z["labels"]), z["test_index"].copy(), str(path)
            )

    def lp_ft_probe(self) -> dict[str, Any]:
        """The probe fitted on the training split alone, as saved by the probe step (its state dict)."""
        path = self.run.artefact(LP_FT_PROBE)
        if not path.is_file():
            raise MissingFileError(
                f"--head-init probe: no linear probe in {self.path} ({path.name} is missing); run the probe first "
                "(drop --no-probe) or use --head-init random"
            )
        try:
            state = read_torch(path)
            if not isinstance(state, dict) or not {"linear.weight", "linear.bias", "mu", "sigma"} <= set(state):
                raise UnreadableFile("not the probe's state dict")
        except UnreadableFile as exc:
            raise InputError(
                f"--head-init probe: {path} is damaged ({exc}); run the probe again in a new folder, "
                "or use --head-init random"
            ) from None
        return state
