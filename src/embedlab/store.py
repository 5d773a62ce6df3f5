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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from embedlab import reader
from embedlab.errors import InputError, MissingFileError
from embedlab.files import UnreadableFile, npz_bytes, read_torch, torch_bytes
from embedlab.results import Files, MoviesRun, RunResults, Steps, StepStatus, files_of
from embedlab.runs import RunDir
from embedlab.sections import METRICS, from_section, to_section
from embedlab.text import markdown_table

#: The probe fitted on the training split alone: what LP-FT starts the fine-tuned head from.
LP_FT_PROBE = "probe_model_train_only.pt"

T = TypeVar("T")


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
class Weights:
    """A network's state dict, saved as a torch file (``torch.save``) and kept in memory by the store that wrote it."""

    state: dict[str, Any]  # name -> torch.Tensor

    def bytes(self) -> bytes:
        return torch_bytes(self.state)


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
    artefacts: Mapping[str, bytes | str | pd.DataFrame | Predictions | Weights] = field(default_factory=dict)
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
        elif isinstance(data, Weights):
            data = data.bytes()
        run.save_artefact(name, data.to_csv(index=False) if isinstance(data, pd.DataFrame) else data)
    for result in out.results:
        save(run, result)


def results_of(results: Iterable[Any]) -> RunResults:
    """``RunResults`` from typed results, each in the field its ``SECTION`` names (a section with no field is a
    programming error, raised here)."""
    fields_ = {f.name for f in dataclasses.fields(RunResults)}
    found = {r.SECTION: r for r in results}
    if unknown := sorted(set(found) - fields_):
        raise ValueError(f"RunResults has no field for the section(s) {unknown}")
    return RunResults(**found)


class Collecting:
    """A writer that keeps every result written through it: a runner's results, without a list kept by hand."""

    def __init__(self, write: Callable[[Output], None]):
        self._write, self._results = write, []

    def __call__(self, out: Output) -> None:
        self._write(out)
        self._results.extend(out.results)

    def results(self) -> RunResults:
        """Every result written so far, typed (``results_of``)."""
        return results_of(self._results)


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
        self._weights: dict[str, Weights] = {}  # likewise

    @classmethod
    def open(cls, path: Path) -> Store:
        """The store of the finished run folder ``path``, for reading (``RunDir.open``'s checks)."""
        return cls(RunDir.open(path))

    @property
    def path(self) -> Path:
        return self.run.path

    def write(self, out: Output) -> None:
        write(self.run, out)
        self._predictions |= {k: v for k, v in out.artefacts.items() if isinstance(v, Predictions)}
        self._weights |= {k: v for k, v in out.artefacts.items() if isinstance(v, Weights)}
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

    def saved_config(self) -> dict[str, Any]:
        """config.json as a whole, every study's settings (what --resume repeats); missing, or anything but a JSON
        object, is an error that names it."""
        path = self.path / "config.json"
        if not path.exists() and not path.is_symlink():
            raise MissingFileError(f"{path} does not exist: the folder was not made by embedlab, or it was deleted")
        data = self.run.read_json("config.json")
        if not isinstance(data, dict):
            raise InputError(f"{path} is not a JSON object of settings; it was edited. Restore it, or start a new run")
        return data

    def saved_settings(self, section: str) -> dict[str, Any]:
        """One study's settings as config.json holds them so far; empty before the study first ran in this folder."""
        data = self.run.read_json("config.json") if self.regular_file("config.json") else {}
        return data.get(section, {}) if isinstance(data, dict) else {}

    def write_environment(self, versions: dict[str, str]) -> None:
        """environment.json: the software and machine that computed the run (``environment.software_versions``)."""
        self.run.write_json("environment.json", versions)

    def write_report(self, markdown: str, html: str) -> Path:
        """report.md and report.html; the path of report.md."""
        out = self.run.write_text("report.md", markdown)
        self.run.write_text("report.html", html)
        return out

    def append_log(self, line: str) -> None:
        """One line at the end of run.log (appended, never rewritten)."""
        self.run.append_text("run.log", line)

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

    def weights(self, name: str, what: str) -> dict[str, Any]:
        """A torch artefact of the run (``probe_model.pt``, ``finetune_checkpoint.pt``) read by ``files.read_torch``,
        which unpickles no code; missing, damaged or not a dict is an error that names it and ``what`` it holds."""
        path = self.artefact(name)
        if path is None:
            raise MissingFileError(
                f"{self.path} holds no {what} (artefacts/{name} is missing): that step did not finish"
            )
        try:
            if not isinstance(state := read_torch(path), dict):
                raise UnreadableFile(f"not the {what} embedlab saved")
        except UnreadableFile as exc:
            raise InputError(f"{path} is damaged ({exc}); run that step again in a new folder") from None
        return state

    def lp_ft_probe(self) -> dict[str, Any]:
        """The probe fitted on the training split alone (its state dict): as written by this process's probe step, else
        read from the run folder (a resumed run, a probe run apart)."""
        if LP_FT_PROBE in self._weights:
            return self._weights[LP_FT_PROBE].state
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
