"""The report's template engine: Jinja2 over Markdown, with one escaping rule and the helpers every section uses.

Every value a template prints goes through ``text.md_text`` (Jinja2's ``finalize``) unless it is ``Markup``: saved
tables, figures and code spans are built here and marked; everything else from data or config is shown literally.
"""

from __future__ import annotations

import functools
import math
from typing import Any, TypeVar

import jinja2
from markupsafe import Markup

from embedlab.runs import RunDir
from embedlab.store import Store
from embedlab.text import md_code, md_text, p_value

#: What a section says in place of an artefact its step should have saved; the tests fail on it, because it
#: means the file-name contract between a pipeline step and its report section is broken.
MISSING = "was not produced"

C = TypeVar("C")


def table(run: RunDir, name: str) -> Markup:
    """The saved table, wrapped in a block that names its CSV (the browser test compares the two cell by cell)."""
    text = Store(run).table_markdown(name)
    if text is None:
        return Markup(f"*(table {name} {MISSING})*")
    return Markup(f'<div class="table" data-table="{name}" markdown="1">\n\n{text.rstrip()}\n\n</div>')


def figure(run: RunDir, name: str, alt: str, caption: str) -> Markup:
    """The figure, then a one-line caption that says what to look at."""
    found = Store(run).has_figure(name)
    return Markup(f"![{alt}](figures/{name}.png)\n\n*{caption}*\n" if found else f"*(figure {name} {MISSING})*")


def _finalize(value: Any) -> Any:
    """The one escaping path: anything not built as Markup is text."""
    return value if isinstance(value, Markup) else md_text(value)


def _fmt(value: Any, spec: str = "") -> str:
    """``{{ x | fmt(",") }}`` is ``format(x, ",")``; None and NaN print as "—"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _runs(n: int, what: str = "run") -> str:
    """A count with its noun in the right number: ``{{ 1 | runs }}`` is "1 run", ``{{ 3 | runs }}`` "3 runs"."""
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"


def _pct(value: float | None, digits: int = 2, sign: bool = False) -> str:
    """A fraction as a percentage number (no % sign): ``{{ 0.8715 | pct }}`` is 87.15."""
    return _fmt(None if value is None else 100 * value, f"{'+' if sign else ''}.{digits}f")


def _minutes(seconds: float | None) -> str:
    """Minutes to one decimal; under a minute, seconds (a short step is not "0.0 min")."""
    if seconds is None:
        return "not measured"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("embedlab.report", "templates"),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        runs=_runs,
        fmt=_fmt,
        pct=_pct,
        p_value=p_value,
        minutes=_minutes,
        code=lambda v: Markup(md_code(v)),
        text=lambda v: Markup(md_text(v)),
    )
    return env


def render(template: str, run: RunDir, **context: Any) -> str:
    """A section's Markdown from its template; ``table(name)`` and ``figure(name, alt, caption)`` embed the run's
    files."""
    return (
        environment()
        .get_template(template)
        .render(
            table=lambda name: table(run, name),
            figure=lambda name, alt, caption: figure(run, name, alt, caption),
            run_path=run.path,
            **context,
        )
    )


def saved_config(run: RunDir, cls: type[C], section: str) -> tuple[C, dict[str, Any]]:
    """One study's settings from the run's config.json, typed and checked by the store's one reader, and what the run
    resolved from them (device, size, …)."""
    from embedlab.overrides import DERIVED

    store = Store(run)
    saved = store.config(section)
    return store.typed_config(cls, section), saved[DERIVED] if DERIVED in saved else {}
