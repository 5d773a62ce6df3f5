"""Reading a finished run folder back: the gate every read of ``store.Store`` passes.

A run folder is input too: it may have been copied, edited or tampered with since embedlab wrote it. So a file is read
only if it is a regular file inside the folder, reached without a symbolic link (nothing elsewhere on the machine can
be pulled in through it), and each kind is checked by its bytes: a figure must be a PNG, a table a CSV that parses.
What fails is left out with one warning that names it, or refused with one error line.
"""

from __future__ import annotations

import functools
import logging
import math
import stat
from pathlib import Path
from typing import Any

import pandas as pd

from embedlab.errors import InputError
from embedlab.files import parse_json

LOGGER = logging.getLogger(__name__)

#: The first bytes of every PNG file (its signature): a figure is read only if it starts with them.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@functools.cache
def warn_once(message: str) -> None:
    """A warning about a file of a run folder, said once per process however often the file is asked for."""
    LOGGER.warning(message)


def regular_file(root: Path, rel: str) -> Path | None:
    """``root / rel`` when it is a regular file reached without a symbolic link; None when it is absent. One that is
    there but is something else (a link, a folder, a pipe) is None too, with a warning that names it."""
    parts = Path(rel).parts
    for depth in range(1, len(parts) + 1):
        here = root.joinpath(*parts[:depth])
        try:
            mode = here.lstat().st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:  # a file where a folder should be, no permission
            warn_once(f"{rel} in {root} cannot be read ({exc.strerror}); left out")
            return None
        last = depth == len(parts)
        if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)):
            what = "a symbolic link" if stat.S_ISLNK(mode) else ("not a regular file" if last else "not a folder")
            warn_once(f"{'/'.join(parts[:depth])} in {root} is {what}, not a file embedlab wrote; left out")
            return None
    return root / rel


def png(root: Path, rel: str) -> bytes | None:
    """The PNG file ``rel`` of the run folder as bytes; None when it is absent, not a regular file of the folder's own
    (``regular_file``) or not a PNG by its bytes (with a warning that names it)."""
    path = regular_file(root, rel)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        warn_once(f"{rel} in {root} cannot be read ({exc.strerror}); left out")
        return None
    if not data.startswith(PNG_SIGNATURE):
        warn_once(f"{rel} in {root} is not a PNG file, not a figure embedlab drew; left out")
        return None
    return data


def read_table(path: Path, where: str) -> pd.DataFrame:
    """A table's CSV as written: an empty cell is a missing value and every other cell is what it says ("NA", "None"
    and "nan" in a title stay text); one that cannot be parsed is an error that names it."""
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where} is damaged ({first}); it was edited. Rerun its step in a new run") from None


def same_json(read: Any, written: Any) -> bool:
    """Whether a value read from JSON is the one ``written`` would be: the same kind (a number is not a text or a
    truth value), finite, and equal."""
    if isinstance(read, bool) or isinstance(written, bool):
        return type(read) is type(written) and read == written
    if isinstance(read, (int, float)) and isinstance(written, (int, float)):
        return math.isfinite(read) and read == written
    if isinstance(read, dict) and isinstance(written, dict):
        return read.keys() == written.keys() and all(same_json(read[k], written[k]) for k in read)
    if isinstance(read, list) and isinstance(written, (list, tuple)):
        return len(read) == len(written) and all(map(same_json, read, written))
    return type(read) is type(written) and read == written


def environment(text: str, path: Path) -> dict[str, str]:
    """environment.json's text as the names and versions it holds; anything but a JSON object of texts and numbers is
    an error that names the file."""
    try:
        data = parse_json(text)
    except ValueError as exc:
        data, why = None, str(exc).splitlines()[0] if str(exc) else "not JSON"
    else:
        why = "not a JSON object of names and versions"
    if not (
        isinstance(data, dict)
        and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in data.values())
    ):
        raise InputError(f"{path} is damaged ({why}); it was edited. Restore it, or rerun the study in a new folder")
    return {k: str(v) for k, v in data.items()}
