"""Progress and messages go through the standard ``logging`` module, under the ``embedlab`` logger.

The steps only call ``logging.getLogger(__name__).info(...)``; where the lines go is the caller's choice.
The command line shows them on stdout (``--quiet``: warnings only; ``--verbose``: debug too; under
torchrun, rank 0 alone) and keeps a copy with timestamps in the run folder's ``run.log``. From a notebook,
``logging.basicConfig(level=logging.INFO)`` shows them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedlab.errors import UserError
from embedlab.files import write_atomic

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
    """Every record appended to ``run.log``; the file is rewritten under a temporary name and renamed, so it never
    holds half a line. A resumed run appends to the lines already there. If the disk fills, the log stops (the
    step's own next write reports the full disk) rather than failing inside logging."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self.text = path.read_text(errors="replace") if path.is_file() else ""
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        self.text += self.format(record) + "\n"
        try:
            write_atomic(self.path, self.text.encode())
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
def run_log(folder: Path) -> Iterator[None]:
    """A copy of every line, debug included, in ``folder/run.log`` for the duration."""
    handler = RunLog(folder / "run.log")
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
