import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedlab.runs import RunDir, RunFolderError, default_run_path


def test_create_never_overwrites(tmp_path):
    run = RunDir.create(tmp_path / "r")
    assert (tmp_path / "r" / "figures").is_dir() and (tmp_path / "r" / "artefacts").is_dir()
    (tmp_path / "r" / "config.json").write_text("{}")
    (tmp_path / "r" / "tables" / "t.csv").write_text("a\n1\n")  # a result: never overwritten
    with pytest.raises(RunFolderError, match="already exists"):
        RunDir.create(tmp_path / "r")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")  # not a run folder at all: never touched
    with pytest.raises(RunFolderError, match="already exists"):
        RunDir.create(tmp_path / "other")
    assert RunDir.open(run.path).path == run.path
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        RunDir.open(tmp_path)


def test_a_run_folder_with_no_finished_step_is_reused(tmp_path):
    RunDir.create(tmp_path / "r").write_json("config.json", {"study": {}})
    (tmp_path / "r" / "metrics.json").write_text('{"steps": {"probe": {"status": "failed"}}}')
    assert RunDir.create(tmp_path / "r").path == tmp_path / "r" and not (tmp_path / "r" / "config.json").exists()
    (tmp_path / "r" / "config.json").write_text("{}")
    (tmp_path / "r" / "metrics.json").write_text('{"steps": {"probe": {"status": "done"}}}')
    with pytest.raises(RunFolderError, match="already exists"):
        RunDir.create(tmp_path / "r")


def test_tables_metrics_and_json_safety(tmp_path):
    run = RunDir.create(tmp_path / "r")
    run.save_table("t", pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan]}))
    assert (tmp_path / "r" / "tables" / "t.csv").read_text().startswith("a,b")
    assert "|" in (tmp_path / "r" / "tables" / "t.md").read_text()
    run.update_metrics("x", {"n": np.int64(3), "nan": float("nan")})
    run.update_metrics("x", {"m": 1.5})
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert data == {"x": {"n": 3, "nan": None, "m": 1.5}}


def test_default_path_is_timestamped():
    assert default_run_path("movies").name.endswith("-movies")


def test_json_writes_are_atomic(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "r")
    run.write_json("metrics.json", {"a": 1})

    real_write = Path.write_bytes

    def interrupted(self, text, *args, **kwargs):  # half the bytes reach the disk, then Ctrl-C
        real_write(self, text.encode()[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.write_json("metrics.json", {"a": 2})
    assert run.read_json("metrics.json") == {"a": 1}  # the ledger is the old one, whole
