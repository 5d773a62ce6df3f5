"""Run folders: created once (never overwritten), holding config, metrics, tables, figures, artefacts.

Layout: ``config.json metrics.json report.md figures/*.png tables/*.{csv,md} artefacts/``.
"""

from __future__ import annotations

import json
import os
import math
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedlab.errors import MissingFileError, UserError


#: Characters that Markdown would read as table syntax, emphasis, code or links inside a cell.
_MD_ESCAPES = str.maketrans({**{c: "\\" + c for c in "\\`*_[]|"}, "<": "&lt;"})


def md_cell(value: object) -> str:
    """Cell text as Markdown shows it literally: 'Action|Adventure' must stay one cell."""
    return str(value).translate(_MD_ESCAPES)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """The one writer of Markdown tables: text cells and headers escaped, numbers formatted with ``floatfmt``."""
    out = df.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else md_cell(v))
    out.columns = [md_cell(c) for c in out.columns]
    return out.to_markdown(index=False, floatfmt=floatfmt)


def holds_no_result(path: Path) -> bool:
    """A run folder (it has config.json) with no finished step, no table, figure or artefact: safe to clear."""
    if not (path / "config.json").is_file():
        return False
    allowed = {"config.json", "metrics.json", "environment.json", "figures", "tables", "artefacts", "report.md", "report.html"}
    if any(p.name not in allowed for p in path.iterdir()):
        return False
    if any(any((path / sub).iterdir()) for sub in ("figures", "tables", "artefacts") if (path / sub).is_dir()):
        return False
    try:
        steps = json.loads((path / "metrics.json").read_text()).get("steps", {}) if (path / "metrics.json").is_file() else {}
    except (json.JSONDecodeError, AttributeError):
        return False
    return not any(v.get("status") == "done" for v in steps.values() if isinstance(v, dict))


class RunFolderError(UserError, FileExistsError):
    """The requested run folder exists and is not empty."""


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

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: Path) -> RunDir:
        """Create a fresh run folder; an existing non-empty folder is an error, never overwritten.

        The one exception: a run folder in which nothing finished (it failed before its first step,
        e.g. on missing data) holds no result, so it is cleared and used again.
        """
        path = Path(path)
        if path.is_dir() and holds_no_result(path):
            shutil.rmtree(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunFolderError(
                f"run folder {path} already exists and is not empty; pick another --out "
                "or leave --out unset for a new timestamped folder"
            )
        try:
            for sub in ("figures", "tables", "artefacts"):
                (path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a regular file on the way, a read-only file system, no permission
            raise RunFolderError(f"cannot create the run folder {path}: {exc.strerror or exc} ({exc.filename or path}); "
                                 "pick another --out") from None
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run folder (for ``recommend`` and re-rendering reports)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise MissingFileError(f"{path} is not a run folder (no config.json); pass the folder a run printed")
        return cls(path)

    def write_json(self, name: str, data: Any) -> Path:
        """Atomically: metrics.json and config.json are the resume ledger, so an interrupt must leave the old or the new file, never half."""
        p = self.path / name
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, p)
        return p

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def metrics(self) -> dict[str, Any]:
        """metrics.json, or {} before the first step has finished."""
        return self.read_json("metrics.json") if (self.path / "metrics.json").is_file() else {}

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
        csv = self.path / "tables" / f"{name}.csv"
        df.to_csv(csv, index=False)
        (self.path / "tables" / f"{name}.md").write_text(markdown_table(df, floatfmt) + "\n")
        return csv

    def save_figure(self, name: str, fig: Any, dpi: int = 130) -> Path:
        """``figures/<name>.png``; the figure is closed afterwards."""
        import matplotlib.pyplot as plt

        p = self.path / "figures" / f"{name}.png"
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return p

    def artefact(self, name: str) -> Path:
        return self.path / "artefacts" / name
