"""Progress and messages go through the standard ``logging`` module, under the ``embedlab`` logger.

The steps only call ``logging.getLogger(__name__).info(...)``; where the lines go is the caller's choice.
The command line shows them on stdout (``--quiet``: warnings only; ``--verbose``: debug too; under
torchrun, rank 0 alone) and keeps a copy with timestamps in the run folder's ``run.log``. From a notebook,
``logging.basicConfig(level=logging.INFO)`` shows them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from embedlab.errors import UserError

LOGGER = logging.getLogger("embedlab")


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time of the record (a notebook's or a test's capture included)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


class RunLog(logging.Handler):
    """Every record appended to ``run.log`` through ``append`` (the store's, one write a line, so the file never
    holds half a line); a resumed run's lines follow those already there. If the disk fills, the log stops (the step's
    own next write reports the full disk) rather than failing inside logging."""

    def __init__(self, append: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self.append = append
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        try:
            self.append(self.format(record) + "\n")
        except (OSError, UserError):
            self.broken = True


@contextmanager
def console(level: int = logging.INFO) -> Iterator[None]:
    """The ``embedlab`` logger's lines on stdout at ``level`` for the duration (one command)."""
    handler = _Stdout()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(previous)


@contextmanager
def run_log(append: Callable[[str], None]) -> Iterator[None]:
    """A copy of every line, debug included, handed to ``append`` (a run folder's ``Store.append_log``) for the
    duration."""
    handler = RunLog(append)
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)


def progress_bar_class() -> type:
    """tqdm's notebook widget where it can draw (Jupyter with ipywidgets), else its text bar: tqdm.auto alone warns
    "IProgress not found" in a notebook without ipywidgets."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, CI, a notebook's captured output) a log line at least every
    ``every`` seconds — "epoch 1/2: 12,800/49,920 img (26 %), 171 img/s, about 3.6 min left" — so a log never sits
    silent through a long step. ``enabled=False`` (ranks > 0) shows neither.

    >>> with Progress(len(images), "train features", "img") as bar:  # doctest: +SKIP
    ...     bar.update(16)
    """

    def __init__(
        self, total: int, desc: str, unit: str = "it", enabled: bool = True, every: float = 30.0, **tqdm_args
    ) -> None:
        tqdm = progress_bar_class()
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=True if not enabled else None, **tqdm_args)
        self.lines = enabled and self.bar.disable  # no terminal to draw on: say it in the log instead
        self.n, self.postfix = 0, ""
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.n += n
        now = time.monotonic()
        if self.lines and now - self.last >= self.every:
            self.last = now
            LOGGER.info(self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        """The progress so far, in one line."""
        rate = self.n / elapsed if elapsed > 0 else 0.0
        left = f", about {(self.total - self.n) / rate / 60:.1f} min left" if rate > 0 and self.total else ""
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        return (
            f"  {self.desc}: {self.n:,}/{self.total:,} {self.unit}{share}, {rate:.3g} {self.unit}/s{left}{self.postfix}"
        )

    def set_postfix(self, **values: object) -> None:
        self.bar.set_postfix(**values)
        self.postfix = "; " + ", ".join(f"{k} {v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text)
        self.postfix = f"; {text}"

    def write(self, message: str) -> None:
        """A line that must not tear the bar: above it on a terminal, else in the log."""
        if self.bar.disable:
            LOGGER.info(message)
        else:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
