"""A step's output, and the one place it is written into a run folder and read back.

A step returns an ``Output``: its typed results (the sections of ``metrics.json``) and the tables, figures and
artefacts it made, each under a name its result type declares in ``FILES``. The runner hands it to ``write`` (or
``Store.write``); the step itself takes no run folder and writes no file, so it can run, and be tested, in memory.
A ``Store`` is also what a runner reads a resumed run's finished steps back through (``results``, ``predictions``,
``lp_ft_probe``).

Example::

    >>> out = Output(results=(DimChoice(chosen_by_rule=32, configured_dim=32),),   # doctest: +SKIP
    ...              tables={"dim_sweep": Table(df)}, figures={"dim_sweep": fig})
    >>> write(run, out)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pathlib import Path

from embedlab.errors import InputError, MissingFileError
from embedlab.files import UnreadableFile, read_torch
from embedlab.results import Files, RunResults, files_of, load, save
from embedlab.runs import RunDir

#: The probe fitted on the training split alone: what LP-FT starts the fine-tuned head from.
LP_FT_PROBE = "probe_model_train_only.pt"


@dataclass(frozen=True)
class Table:
    """A table of the run: ``tables/<name>.csv`` and the Markdown copy the report embeds (``floatfmt`` for its floats)."""

    df: pd.DataFrame
    floatfmt: str = ".4g"


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
    artefacts: Mapping[str, bytes | str | pd.DataFrame] = field(default_factory=dict)
    owner: type | None = None

    def __post_init__(self) -> None:
        declared = Files.union(files_of(t) for t in {type(r) for r in self.results} | ({self.owner} if self.owner else set()))
        for kind in ("tables", "figures", "artefacts"):
            for name in getattr(self, kind):
                if not declared.allows(kind, name):
                    raise ValueError(f"{kind[:-1]} {name!r} is not declared in the FILES of {[t.__name__ for t in map(type, self.results)]}")


def write(run: RunDir, out: Output) -> None:
    """Every file of ``out``, each written under a temporary name and renamed; then its results into metrics.json."""
    for name, t in out.tables.items():
        run.save_table(name, t.df, t.floatfmt)
    for name, fig in out.figures.items():
        run.save_figure(name, fig)
    for name, data in out.artefacts.items():
        run.save_artefact(name, data.to_csv(index=False) if isinstance(data, pd.DataFrame) else data)
    for result in out.results:
        save(run, result)


def writer(run: RunDir) -> Callable[[Output], None]:
    """``write`` into ``run``: what a study's runner is handed, so that it never holds the run folder itself."""
    return functools.partial(write, run)


@dataclass(frozen=True)
class Predictions:
    """One model's saved test predictions: class probabilities, labels and the test indices they belong to."""

    probs: Any  # torch.Tensor (n, classes)
    labels: Any  # torch.Tensor (n,)
    test_index: Any  # np.ndarray (n,)
    source: str  # where they were read from, for messages


class Store:
    """A run folder as a study's runner sees it: write a step's output, record a study's settings, and read back what
    finished steps left there (a resumed run, the comparison of two studies run apart)."""

    def __init__(self, run: RunDir):
        self.run = run

    @property
    def path(self) -> Path:
        return self.run.path

    def write(self, out: Output) -> None:
        write(self.run, out)

    def settings(self, section: str, values: dict[str, Any]) -> None:
        """One study's settings as it runs them, into config.json (what --config and --resume repeat)."""
        self.run.update_config(section, values)

    def results(self) -> RunResults:
        return load(self.run)

    def checkpoint(self) -> Path:
        """Where fine-tuning keeps its epoch checkpoint (the training loop is handed this path)."""
        return self.run.artefact("finetune_checkpoint.pt")

    def predictions(self, name: str) -> Predictions | None:
        """``<name>_test_probs.npz`` ("probe" or "finetune"), or None when the run has none."""
        import numpy as np
        import torch

        path = self.run.artefact(f"{name}_test_probs.npz")
        if not path.is_file():
            return None
        with np.load(path) as z:
            return Predictions(torch.from_numpy(z["probs"]), torch.from_numpy(z["labels"]), z["test_index"].copy(), str(path))

    def lp_ft_probe(self) -> dict[str, Any]:
        """The probe fitted on the training split alone, as saved by the probe step (its state dict)."""
        path = self.run.artefact(LP_FT_PROBE)
        if not path.is_file():
            raise MissingFileError(f"--head-init probe: no linear probe in {self.path} ({path.name} is missing); run the probe first "
                                   f"(drop --no-probe) or use --head-init random")
        try:
            state = read_torch(path)
            if not isinstance(state, dict) or not {"linear.weight", "linear.bias", "mu", "sigma"} <= set(state):
                raise UnreadableFile("not the probe's state dict")
        except UnreadableFile as exc:
            raise InputError(f"--head-init probe: {path} is damaged ({exc}); run the probe again in a new folder, "
                             "or use --head-init random") from None
        return state
