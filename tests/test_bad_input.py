"""Bad input, row by row (issue 11): exit status 2, exactly one `embedlab: error:` line, no traceback,
and no run folder left looking complete. Every row builds its own broken input inside the test."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from embedlab.cli import main

FAST = ["--profile", "smoke", "--dim", "4", "--iterations", "20", "--min-likes", "2", "--offline", "--no-map", "--dim-sweep", ""]


def _ratings(root: Path) -> Path:
    return root / "ml-latest-small" / "ratings.csv"


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


# (id, how to break the MovieLens folder, extra flags, what the message must say)
MOVIELENS_ROWS: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("non-numeric rating", lambda r: _append(_ratings(r), "1,10,abc,1000\n"), ["--allow-modified-data"], "ratings.csv"),
    ("7-star rating", lambda r: _append(_ratings(r), "1,10,7.0,1000\n"), ["--allow-modified-data"], "half star"),
    ("negative ids", lambda r: _append(_ratings(r), "-5,-10,4.0,1000\n"), ["--allow-modified-data"], "below 1"),
    ("cut inside a line", lambda r: _append(_ratings(r), "318,2925,3"), ["--allow-modified-data"], "cut short"),
    ("rated twice", lambda r: _append(_ratings(r), "1,10,4.0,1000\n1,10,4.0,1000\n"), ["--allow-modified-data"], "rated twice"),
    ("empty ratings.csv", lambda r: _ratings(r).write_bytes(b""), ["--allow-modified-data"], "ratings.csv is empty"),
    ("Latin-1 movies.csv", lambda r: (r / "ml-latest-small" / "movies.csv").write_bytes(
        "movieId,title,genres\n1,Am\xe9lie (2001),Comedy\n".encode("latin-1")), ["--allow-modified-data"], "not UTF-8"),
    ("not the official release", lambda r: None, [], "--allow-modified-data"),
]


@pytest.mark.parametrize("name, breaks, flags, says", MOVIELENS_ROWS, ids=[r[0] for r in MOVIELENS_ROWS])
def test_bad_movielens_files(movielens_root, tmp_path, capsys, name, breaks, flags, says):
    breaks(movielens_root)
    out = tmp_path / "out"
    _expect_one_error(main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, *flags]), capsys, says)
    assert not (out / "report.md").exists()


CONFIG_ROWS = [
    ({"movies": {"dim": "abc"}}, "movies.dim"),
    ({"probe": {"size": "64"}}, "probe.size"),
    ({"movies": 5}, "section 'movies'"),
    ({"movies": {"dim": 8.5}}, "movies.dim"),
    ({"movies": {"grid": ["adam"]}}, "movies.grid"),
    ({"movies": {"offline": "no"}}, "movies.offline"),
    ({"movies": {"queries": "Toy Story"}}, "movies.queries"),
]


@pytest.mark.parametrize("config, says", CONFIG_ROWS, ids=[json.dumps(c) for c, _ in CONFIG_ROWS])
def test_config_values_of_the_wrong_type(movielens_root, tmp_path, capsys, config, says):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "out"
    _expect_one_error(main(["run", "--profile", "smoke", "--data-dir", str(movielens_root), "--offline", "--config", str(path),
                            "--out", str(out)]), capsys, says)
    assert not (out / "metrics.json").exists()


def test_config_naming_a_directory(tmp_path, capsys):
    _expect_one_error(main(["run", "--profile", "smoke", "--config", str(tmp_path), "--out", str(tmp_path / "o")]), capsys, "is a directory")


def test_out_under_a_regular_file(movielens_root, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _expect_one_error(main(["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "file" / "run"), *FAST,
                            "--allow-modified-data"]), capsys, "cannot create the run folder")


def test_out_on_a_read_only_file_system(movielens_root, tmp_path, capsys, monkeypatch):
    """EROFS as the kernel raises it (a real read-only mount needs root, and root ignores chmod)."""
    import errno

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    _expect_one_error(main(["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "ro" / "run"), *FAST,
                            "--allow-modified-data"]), capsys, "Read-only file system")


@pytest.mark.parametrize("device, says", [("banana", "--device must be"), ("cuda", "no CUDA device")])
def test_unusable_devices_fail_before_any_data(tmp_path, capsys, device, says):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    # no data at all: the device must be refused before anything looks for it
    _expect_one_error(main(["vision", "probe", "--data-dir", str(tmp_path / "nothing"), "--offline", "--device", device,
                            "--out", str(tmp_path / "o")]), capsys, says)


@pytest.mark.parametrize("flags, says", [(["--pad", "20"], "--pad must be in 0..16 pixels (got 20)"),
                                         (["--weight-decay", "-1"], "--weight-decay must be >= 0 (got -1.0)")])
def test_out_of_range_recipe_flags_fail_before_any_data(tmp_path, capsys, flags, says):
    _expect_one_error(main(["vision", "finetune", "--data-dir", str(tmp_path / "nothing"), "--offline", *flags,
                            "--out", str(tmp_path / "o")]), capsys, says)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    from conftest import write_movielens

    root = tmp_path_factory.mktemp("data")
    write_movielens(root / "ml-latest-small")
    out = tmp_path_factory.mktemp("runs") / "movies"
    assert main(["movies", "--data-dir", str(root), "--out", str(out), *FAST, "--allow-modified-data"]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


RECOMMEND_ROWS: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("truncated npz", lambda r: (r / "artefacts" / "embeddings.npz").write_bytes((r / "artefacts" / "embeddings.npz").read_bytes()[:200]),
     [], "embeddings.npz is damaged"),
    ("empty npz", lambda r: (r / "artefacts" / "embeddings.npz").write_bytes(b""), [], "embeddings.npz is damaged"),
    ("items.csv of the wrong length", lambda r: (r / "artefacts" / "items.csv").write_text(
        "\n".join((r / "artefacts" / "items.csv").read_text().splitlines()[:-3]) + "\n"), [], "different runs"),
    ("malformed config.json", lambda r: (r / "config.json").write_text('{"study": {}}'), [], "config.json"),
    ("min-likes above every movie", lambda r: None, ["--min-likes", "100000"], "no movie has >= 100000 likes"),
    ("negative min-likes", lambda r: None, ["--min-likes", "-5"], "--min-likes must be >= 0"),
]


@pytest.mark.parametrize("name, breaks, flags, says", RECOMMEND_ROWS, ids=[r[0] for r in RECOMMEND_ROWS])
def test_recommend_on_bad_runs_and_flags(saved_run, tmp_path, capsys, name, breaks, flags, says):
    run = _copy(saved_run, tmp_path)
    breaks(run)
    _expect_one_error(main(["recommend", "Toy Story", "--run", str(run), *flags]), capsys, says)


def test_recommend_a_movie_nobody_liked_says_so(saved_run, tmp_path, capsys):
    run = _copy(saved_run, tmp_path)
    cat = run / "artefacts" / "catalogue.csv"
    _append(cat, "99999,Nobody Liked This (2001)\n")
    _expect_one_error(main(["recommend", "Nobody Liked This", "--run", str(run)]), capsys, "nobody liked it")


def test_recommend_matches_accents(saved_run, tmp_path, capsys):
    run = _copy(saved_run, tmp_path)
    items = run / "artefacts" / "items.csv"
    items.write_text(items.read_text().replace("Home Alone (1990)", "Amélie (2001)"))
    cat = run / "artefacts" / "catalogue.csv"
    cat.write_text(cat.read_text().replace("Home Alone (1990)", "Amélie (2001)"))
    assert main(["recommend", "amelie", "--run", str(run), "--top", "3"]) == 0
    assert "Top 3 for Amélie (2001)" in capsys.readouterr().out


def test_optimizer_outside_the_profiles_grid_gets_the_default_rates(movielens_root, tmp_path):
    out = tmp_path / "o"
    assert main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data",
                 "--optimizers", "rmsprop", "--no-map"]) == 0
    assert set(json.loads((out / "config.json").read_text())["movies"]["grid"]) == {"rmsprop"}


def _expect_one_error(status: int, capsys: pytest.CaptureFixture[str], says: str) -> str:
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("embedlab: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert says in err, err
    return err


def test_npz_helper_is_a_real_archive(saved_run):
    with np.load(saved_run / "artefacts" / "embeddings.npz") as z:  # the rows above break a file that is valid to begin with
        assert z["v"].ndim == 2


def test_missing_test_batch_names_only_that_file(cifar_root, tmp_path, capsys):
    (cifar_root / "cifar-10-batches-py" / "test_batch").unlink()
    err = _expect_one_error(main(["vision", "probe", "--data-dir", str(cifar_root), "--offline", "--weights", "none",
                                  "--out", str(tmp_path / "o")]), capsys, "test_batch missing")
    assert "data_batch_1" not in err


def test_a_text_file_as_weights(cifar_root, tmp_path, capsys):
    weights = tmp_path / "weights.txt"
    weights.write_text("these are not weights\n")
    _expect_one_error(main(["vision", "probe", "--data-dir", str(cifar_root), "--offline", "--weights", str(weights),
                            "--out", str(tmp_path / "o")]), capsys, "is not a PyTorch state-dict file")


def test_dim_sweep_zero_is_refused_before_any_work(movielens_root, tmp_path, capsys):
    out = tmp_path / "o"
    _expect_one_error(main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data",
                            "--dim-sweep", "0"]), capsys, "--dim-sweep")
    assert not (out / "metrics.json").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="is a directory"):
        main(["run", "--profile", "smoke", "--config", str(tmp_path), "--out", str(tmp_path / "o"), "--debug"])


def test_recommend_warns_when_the_query_has_fewer_likes_than_min_likes(saved_run, capsys):
    import pandas as pd

    items = pd.read_csv(saved_run / "artefacts" / "items.csv")
    rare = items.sort_values("likes").iloc[0]
    assert rare["likes"] < items["likes"].max()  # some movies stay eligible
    assert main(["recommend", str(rare["title"]), "--run", str(saved_run), "--min-likes", str(int(rare["likes"]) + 1), "--top", "3"]) == 0
    err = capsys.readouterr().err
    assert f"embedlab: note: {rare['title']} itself has only {int(rare['likes'])} likes" in err


def test_finetune_help_states_the_configured_defaults(capsys):
    from embedlab.config import FinetuneConfig

    with pytest.raises(SystemExit):
        main(["vision", "finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {FinetuneConfig().cpu_size})" in text and f"cpu recipe {FinetuneConfig().epochs}," in text


def test_a_real_bug_is_not_reported_as_a_user_error(monkeypatch, saved_run):
    """Only the project's UserError becomes one line: a plain ValueError from a bug keeps its traceback."""
    from embedlab.movies import saved

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(saved.SavedEmbeddings, "recommend", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["recommend", "Toy Story", "--run", str(saved_run)])


def test_every_project_error_is_a_user_error_and_keeps_its_builtin():
    from embedlab.data import ChecksumError, DataNotFoundError
    from embedlab.errors import UserError
    from embedlab.movies.movielens import TitleLookupError
    from embedlab.runs import RunFolderError
    from embedlab.vision.finetune import CheckpointMismatch, TrainingDiverged

    for cls, builtin in ((ChecksumError, ValueError), (DataNotFoundError, FileNotFoundError), (TitleLookupError, LookupError),
                         (RunFolderError, FileExistsError), (CheckpointMismatch, ValueError), (TrainingDiverged, RuntimeError)):
        assert issubclass(cls, UserError) and issubclass(cls, builtin), cls
