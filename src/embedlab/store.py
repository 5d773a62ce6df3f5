"""A step's output, and the one place it is written into a run folder.

A step returns an ``Output``: its typed results (the sections of ``metrics.json``) and the tables, figures and
artefacts it made, each under a name its result type declares in ``FILES``. The runner hands it to ``write``; the
step itself takes no run folder and writes no file, so it can run, and be tested, in memory.

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

from embedlab.results import Files, files_of, save
from embedlab.runs import RunDir


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
