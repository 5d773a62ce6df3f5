import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedlab.errors import DiskFullError
from embedlab.runs import LOCK, MARKER, RunDir, RunFolderBusy, RunFolderError, default_run_path


def lock_holder(path: Path) -> str | None:
    """Who holds the folder's lock ('pid 1234 on host'), or None when no live process does."""
    lock = Path(path) / LOCK
    if not lock.is_file():
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock.read_text(errors="replace").strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def test_create_never_overwrites(tmp_path):
    run = RunDir.create(tmp_path / "r")
    assert (
        (tmp_path / "r" / "figures").is_dir()
        and (tmp_path / "r" / "artefacts").is_dir()
        and (tmp_path / "r" / MARKER).is_file()
    )
    (tmp_path / "r" / "config.json").write_text("{}")
    (tmp_path / "r" / "tables" / "t.csv").write_text("a\n1\n")  # a result: never overwritten
    run.release()
    with pytest.raises(RunFolderError, match="already holds results"):
        RunDir.create(tmp_path / "r")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")  # not a run folder at all: never touched
    with pytest.raises(RunFolderError, match="not made by embedlab"):
        RunDir.create(tmp_path / "other")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    assert RunDir.open(run.path).path == run.path
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        RunDir.open(tmp_path)


def test_a_run_folder_with_no_finished_step_is_reused(tmp_path):
    run = RunDir.create(tmp_path / "r")
    run.write_json("config.json", {"study": {}})
    run.release()
    (tmp_path / "r" / "metrics.json").write_text('{"steps": {"probe": {"status": "failed"}}}')
    run = RunDir.create(tmp_path / "r")
    assert run.path == tmp_path / "r" and not (tmp_path / "r" / "config.json").exists()
    run.release()
    (tmp_path / "r" / "config.json").write_text("{}")
    (tmp_path / "r" / "metrics.json").write_text('{"steps": {"probe": {"status": "done"}}}')
    with pytest.raises(RunFolderError, match="already holds results"):
        RunDir.create(tmp_path / "r")


def test_a_folder_with_a_users_files_is_never_cleared(tmp_path):
    """File names prove nothing: a user's own config.json and report.md in an unmarked folder are left alone."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "report.md").write_text("my notes")
    with pytest.raises(RunFolderError, match="not made by embedlab"):
        RunDir.create(mine)
    assert (mine / "config.json").read_text() == '{"my": "settings"}' and (mine / "report.md").read_text() == "my notes"
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "report.md"]


def test_a_marked_folder_with_a_foreign_file_is_not_cleared(tmp_path):
    RunDir.create(tmp_path / "r").release()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="already holds results"):
        RunDir.create(tmp_path / "r")
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"


def test_an_empty_folder_made_by_failed_set_up_is_reusable(tmp_path):
    """A command that failed before its first result (say, on bad --weights) leaves its marker, config.json and empty
    subfolders: the folder is usable again. Once a table is in it, it is not."""
    run = RunDir.create(tmp_path / "r")
    run.update_config("probe", {"weights": "bad.pt"})
    run.release()
    assert {p.name for p in (tmp_path / "r").iterdir()} >= {MARKER, "config.json", "tables", "figures", "artefacts"}
    run = RunDir.create(tmp_path / "r")
    run.save_table("t", pd.DataFrame({"a": [1]}))
    run.release()
    with pytest.raises(RunFolderError, match="already holds results"):
        RunDir.create(tmp_path / "r")


def test_one_process_at_a_time(tmp_path):
    run = RunDir.create(tmp_path / "r")
    with pytest.raises(RunFolderBusy, match=f"in use by another embedlab run \\(pid {os.getpid()}"):
        RunDir.create(tmp_path / "r")
    run.write_json("config.json", {})
    with pytest.raises(RunFolderBusy):
        RunDir.open(tmp_path / "r", write=True)
    assert lock_holder(tmp_path / "r") == f"pid {os.getpid()} on {socket.gethostname()}"
    RunDir.open(tmp_path / "r")  # reading needs no lock
    run.release()
    assert lock_holder(tmp_path / "r") is None
    RunDir.open(tmp_path / "r", write=True).release()


def test_a_lock_dies_with_its_process(tmp_path):
    """kill -9 leaves the lock file behind, but not the lock: the kernel releases it, so --resume just works."""
    folder = tmp_path / "r"
    code = (
        f"from embedlab.runs import RunDir; import os, sys; r = RunDir.create({str(folder)!r});"
        " r.write_json('config.json', {}); print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=f"pid {proc.pid}"):
            RunDir.open(folder, write=True)
    finally:
        proc.kill()
        proc.wait()
    assert (folder / LOCK).exists() and lock_holder(folder) is None
    RunDir.open(folder, write=True).release()


def test_a_full_disk_leaves_no_partial_file_and_says_how_much_was_needed(tmp_path, monkeypatch):
    import errno

    import embedlab.files as files

    run = RunDir.create(tmp_path / "r")
    run.save_artefact("a.bin", b"old")
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            f.write(b"x" * 10)  # part of the file reaches the disk, then the disk is full
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return f

    monkeypatch.setattr(files, "open", full, raising=False)
    with pytest.raises(DiskFullError, match=r"no space left in .*artefacts to write a.bin \(5.0 KB needed, .* free\)"):
        run.save_artefact("a.bin", b"n" * 5000)
    assert (tmp_path / "r" / "artefacts" / "a.bin").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "r" / "artefacts").iterdir()] == ["a.bin"]


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
    import embedlab.files as files

    run = RunDir.create(tmp_path / "r")
    run.write_json("metrics.json", {"a": 1})
    real_open = open

    def interrupted(path, mode="r", *args, **kwargs):  # half the bytes reach the disk, then Ctrl-C
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            f.write(b'{"a": ')
            f.close()
            raise KeyboardInterrupt
        return f

    monkeypatch.setattr(files, "open", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        run.write_json("metrics.json", {"a": 2})
    assert run.read_json("metrics.json") == {"a": 1}  # the ledger is the old one, whole
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_a_missing_value_in_a_table_reads_as_a_dash_not_nan():
    from embedlab.text import markdown_table

    table = markdown_table(pd.DataFrame({"optimizer": ["sgd", None], "gap_%": [np.nan, 0.1234], "lr": [1e-4, np.nan]}))
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert rows == [["sgd", "—", "0.0001"], ["—", "0.1234", "—"]] and "nan" not in table


def test_a_column_shows_no_more_decimals_than_its_values_hold():
    from embedlab.text import markdown_table

    df = pd.DataFrame({"seconds": [1.84, 0.02, 2.1], "cost": [0.5, 1 / 3, 2.0]})
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown_table(df).splitlines()[2:]]
    # seconds rounded to 0.01 keep two decimals (not "1.84000"); a third has its four significant digits
    assert rows == [["1.84", "0.5000"], ["0.02", "0.3333"], ["2.10", "2.0000"]]


def test_counts_carry_thousands_separators_and_p_values_read_one_way():
    from embedlab.text import markdown_table

    df = pd.DataFrame(
        {
            "year": [1995, 2001],
            "movieId": [1234, 5678],
            "queries": [2186, 7802],
            "cost": [826843.0, 1000.0],
            "mcnemar_p": [2.06e-129, 0.3],
        }
    )
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown_table(df).splitlines()[2:]]
    assert rows == [
        ["1995", "1234", "2,186", "826,843", "2.1 × 10⁻¹²⁹"],  # a year and an id are labels, not counts
        ["2001", "5678", "7,802", "1,000", "0.3"],
    ]


@pytest.mark.parametrize(
    ("p", "shown"),
    [(0.3, "0.3"), (0.0321, "0.032"), (0.001, "0.001"), (9.9e-4, "9.9 × 10⁻⁴"), (1.2e-10, "1.2 × 10⁻¹⁰")],
)
def test_a_p_value_has_two_significant_digits_and_a_power_of_ten_below_a_thousandth(p, shown):
    from embedlab.text import p_value

    assert p_value(p) == shown


def test_a_title_that_looks_like_a_number_is_shown_as_written():
    from embedlab.text import markdown_table

    table = markdown_table(pd.DataFrame({"title": ["2.0", "3.10"], "likes": [3, 1]}))  # not "2" and "3.1"
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["2.0", "3.10"]
