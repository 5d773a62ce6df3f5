"""Run folders: created once (never overwritten), holding config, metrics, tables, figures, artefacts.

Layout: ``.embedlab`` (the marker, written first) ``config.json metrics.json report.md figures/*.png tables/*.{csv,md}
artefacts/``.
A run folder is claimed by one process at a time (a kernel lock on ``.embedlab.lock``), and every file in it is
written under a temporary name and renamed (``files.write_atomic``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedlab.errors import InputError, MissingFileError, UserError
from embedlab.files import figure_bytes, parse_json, write_atomic
from embedlab.text import markdown_table

#: Written first into every run folder embedlab creates: only a folder that carries it is ever cleared.
MARKER = ".embedlab"
#: Held (flock) by the one process that writes into the folder; the kernel releases it when that process ends.
LOCK = ".embedlab.lock"
#: What embedlab writes into a run folder: a marked folder holding only these, with no finished step, may be cleared.
OWN_NAMES = {
    MARKER,
    LOCK,
    "config.json",
    "metrics.json",
    "environment.json",
    "run.log",
    "figures",
    "tables",
    "artefacts",
    "report.md",
    "report.html",
}


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def holds_no_result(path: Path) -> bool:
    """A folder embedlab created (it carries the marker) with no finished step, no table, figure or artefact: safe to
    clear."""
    if not (path / MARKER).is_file():
        return False
    if any(p.name not in OWN_NAMES and not _is_temporary(p.name) for p in path.iterdir()):
        return False
    if any(any((path / sub).iterdir()) for sub in ("figures", "tables", "artefacts") if (path / sub).is_dir()):
        return False
    try:
        metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else {}
        steps = metrics.get("steps", {}) if isinstance(metrics, dict) else {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False
    return not any(v.get("status") == "done" for v in steps.values() if isinstance(v, dict))


class RunFolderError(UserError, FileExistsError):
    """The requested run folder exists and is not empty."""


class RunFolderBusy(RunFolderError):
    """Another embedlab process is writing into the run folder."""


def default_run_path(study: str, root: Path = Path("runs"), now: datetime | None = None) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<study>``."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{study}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


class RunDir:
    """A run folder and the only code that writes into it."""

    #: Folders this process has claimed, so that ``release_all`` can let go of every one when a command ends.
    _held: list[RunDir] = []

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    @classmethod
    def create(cls, path: Path) -> RunDir:
        """Claim a fresh run folder: created (or an empty one used), marked as embedlab's and locked for this process.

        An existing folder that is not empty is never overwritten. The one exception: a folder embedlab
        created in which nothing finished (it failed before its first step, e.g. on missing data) holds
        no result, so it is cleared and used again. Whatever does not carry embedlab's marker is never touched.
        """
        path = Path(path)
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise RunFolderError(
                    f"cannot create the run folder {path}: a file of that name exists; pick another --out"
                ) from None
            others = {p.name for p in path.iterdir()} - {LOCK}
            if others and MARKER not in others:
                raise RunFolderError(
                    f"run folder {path} already exists, is not empty and was not made by embedlab; pick another "
                    "--out or leave --out unset for a new timestamped folder (nothing in it was touched)"
                ) from None
        except OSError as exc:  # a regular file on the way, a read-only file system, no permission
            raise RunFolderError(
                f"cannot create the run folder {path}: {exc.strerror or exc} ({exc.filename or path}); "
                "pick another --out"
            ) from None
        run = cls(path)
        run.claim()
        try:
            run._clear_if_reusable()
            write_atomic(
                path / MARKER,
                json.dumps({"made_by": "embedlab", "created": datetime.now().isoformat(timespec="seconds")}) + "\n",
            )
            for sub in ("figures", "tables", "artefacts"):
                (path / sub).mkdir(exist_ok=True)
        except OSError as exc:
            run.release()
            if isinstance(exc, UserError):
                raise
            raise RunFolderError(
                f"cannot create the run folder {path}: {exc.strerror or exc} ({exc.filename or path}); "
                "pick another --out"
            ) from None
        except BaseException:
            run.release()
            raise
        return run

    def _clear_if_reusable(self) -> None:
        """Under the lock: a marked folder with no result is emptied of what embedlab wrote; one with results is
        refused."""
        if not (self.path / MARKER).is_file():
            return
        if not holds_no_result(self.path):
            raise RunFolderError(
                f"run folder {self.path} already holds results; continue it with --resume {self.path}, pick another "
                "--out, or leave --out unset for a new timestamped folder"
            )
        for p in self.path.iterdir():
            if p.name in (MARKER, LOCK):
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    @classmethod
    def open(cls, path: Path, write: bool = False) -> RunDir:
        """An existing run folder: read-only (``recommend``), or claimed for writing (``--resume``, ``report``)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise MissingFileError(f"{path} is not a run folder (no config.json); pass the folder a run printed")
        for sub in ("figures", "tables", "artefacts"):  # what a resumed or re-rendered run writes into
            p = path / sub
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                raise InputError(
                    f"{p} is not a folder (a file or a link stands there); the run folder was changed since embedlab "
                    "wrote it. Restore it, or start a new run"
                )
        run = cls(path)
        if write:
            run.claim()
        return run

    def claim(self) -> None:
        """Take the folder's lock for this process's life (or until ``release``); a folder in use by a live process is
        refused."""
        if self._lock_fd is not None:
            return
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFolderError(
                f"cannot write into the run folder {self.path}: {exc.strerror or exc}; pick another --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusy(
                f"run folder {self.path} is in use by another embedlab run ({holder}); wait for it to finish, "
                "or pick another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd
        RunDir._held.append(self)

    def claimed(self) -> RunDir:
        """This folder, claimed for this process (see ``claim``)."""
        self.claim()
        return self

    def release(self) -> None:
        """Let go of the folder's lock (the kernel does it too when the process ends, however it ends)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
            RunDir._held.remove(self)

    @classmethod
    def release_all(cls) -> None:
        """Let go of every folder this process claimed (the end of a command)."""
        for run in list(cls._held):
            run.release()

    def write_json(self, name: str, data: Any) -> Path:
        """Atomically: metrics.json and config.json are the resume ledger, so an interrupt must leave the old or the new
        file, never half."""
        return write_atomic(self.path / name, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")

    def write_text(self, name: str, text: str) -> Path:
        """A text file of the run folder (report.md, report.html), atomically."""
        return write_atomic(self.path / name, text)

    def append_text(self, name: str, text: str) -> None:
        """``text`` at the end of a file of the run folder (run.log) in one write, so a line is never split or
        interleaved; a link in its place is refused, as every other file of the folder is written anew."""
        fd = os.open(self.path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def read_json(self, name: str) -> Any:
        """A JSON file of the run folder; a damaged one is a user error that names it."""
        p = self.path / name
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise InputError(f"{p} is not a regular file (a link, a folder or a device); restore it, or start anew")
        try:
            return parse_json(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # not JSON, a key twice, nested too deeply
            raise InputError(
                f"{p} is damaged ({exc}); it was edited or cut short. Restore it, or start a new run"
            ) from None

    def metrics(self) -> dict[str, Any]:
        """metrics.json, or {} before the first step has finished. A folder whose report was written (so its steps
        finished) but whose metrics.json is gone, or is not a file, is refused: nothing is read as empty, and nothing
        finished is overwritten by less."""
        p = self.path / "metrics.json"
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise InputError(f"{p} is not a file (a link or a folder); it was replaced. Restore it, or start a new run")
        if not p.exists() and any((self.path / name).exists() for name in ("report.md", "report.html")):
            raise InputError(
                f"{p} is missing, but {self.path} holds a finished run's report: metrics.json was deleted or moved. "
                "Restore it, or start a new run (nothing was changed)"
            )
        data = self.read_json("metrics.json") if p.is_file() else {}
        if not isinstance(data, dict):
            raise InputError(
                f"{self.path / 'metrics.json'} is damaged (not a JSON object); it was edited. Restore it, or start a"
                " new run"
            )
        return data

    def config(self, section: str) -> dict[str, Any]:
        """One study's settings from config.json; a missing or damaged section is a user error that names it."""
        data = self.read_json("config.json")
        if not isinstance(data, dict) or not isinstance(data.get(section), dict):
            raise InputError(
                f"{self.path / 'config.json'} has no {section!r} section of settings; it was edited, or the folder was "
                f"not made by embedlab's {section} step"
            )
        return data[section]

    def update_config(self, section: str, values: dict[str, Any]) -> None:
        """Save one study's resolved config into config.json (one folder can hold several studies)."""
        p = self.path / "config.json"
        data = json.loads(p.read_text()) if p.exists() else {}
        data[section] = values
        self.write_json("config.json", data)

    def update_metrics(self, section: str, values: dict[str, Any]) -> None:
        """Merge one study's headline numbers into metrics.json (written after every step)."""
        p = self.path / "metrics.json"
        data = json.loads(p.read_text()) if p.exists() else {}
        data[section] = {**data.get(section, {}), **values}
        self.write_json("metrics.json", data)

    def save_table(self, name: str, df: pd.DataFrame, floatfmt: str = ".4g") -> Path:
        """``tables/<name>.csv`` plus a Markdown copy for the report."""
        csv = write_atomic(self.path / "tables" / f"{name}.csv", df.to_csv(index=False))
        write_atomic(self.path / "tables" / f"{name}.md", markdown_table(df, floatfmt) + "\n")
        return csv

    def save_figure(self, name: str, fig: Any, dpi: int = 130) -> Path:
        """``figures/<name>.png``; the figure is closed afterwards."""
        import matplotlib.pyplot as plt

        try:
            return write_atomic(self.path / "figures" / f"{name}.png", figure_bytes(fig, dpi))
        finally:
            plt.close(fig)

    def artefact(self, name: str) -> Path:
        return self.path / "artefacts" / name

    def save_artefact(self, name: str, data: bytes | str) -> Path:
        """``artefacts/<name>``, atomically (see ``files.npz_bytes`` and ``files.torch_bytes`` for arrays and state
        dicts)."""
        return write_atomic(self.artefact(name), data)

    def save_csv(self, name: str, df: pd.DataFrame) -> Path:
        """``artefacts/<name>`` as CSV without the index, atomically."""
        return self.save_artefact(name, df.to_csv(index=False))
