"""Bad input, row by row: exit status 2, exactly one `embedlab: error:` line, no traceback,
and no run folder left looking complete. Every row builds its own broken input inside the test."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MOVIES, copy_run, expect_one_error, with_flags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedlab.cli import main

FAST = FAST_MOVIES


def _ratings(root: Path) -> Path:
    return root / "ml-latest-small" / "ratings.csv"


def _append(path: Path, text: str | bytes) -> None:
    with open(path, "ab") as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8"))


# (id, how to break the MovieLens folder, extra flags, what the message must say)
MOVIELENS_ROWS: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("non-numeric rating", lambda r: _append(_ratings(r), "1,10,abc,1000\n"), ["--allow-modified-data"], "ratings.csv"),
    ("7-star rating", lambda r: _append(_ratings(r), "1,10,7.0,1000\n"), ["--allow-modified-data"], "half star"),
    ("negative ids", lambda r: _append(_ratings(r), "-5,-10,4.0,1000\n"), ["--allow-modified-data"], "below 1"),
    (
        "a rating of 1e308 (inf once read as float32)",
        lambda r: _append(_ratings(r), "1,10,1e308,1000\n"),
        ["--allow-modified-data"],
        "not a half star from 0.5 to 5.0 on data line",
    ),
    ("a rating NaN", lambda r: _append(_ratings(r), "1,10,NaN,1000\n"), ["--allow-modified-data"], "'1,10,NaN,1000'"),
    ("cut inside a line", lambda r: _append(_ratings(r), "318,2925,3"), ["--allow-modified-data"], "cut short"),
    (
        "rated twice",
        lambda r: _append(_ratings(r), "1,10,4.0,1000\n1,10,4.0,1000\n"),
        ["--allow-modified-data"],
        "rated twice",
    ),
    ("empty ratings.csv", lambda r: _ratings(r).write_bytes(b""), ["--allow-modified-data"], "ratings.csv is empty"),
    (
        "Latin-1 movies.csv",
        lambda r: (r / "ml-latest-small" / "movies.csv").write_bytes(
            "movieId,title,genres\n1,Am\xe9lie (2001),Comedy\n".encode("latin-1")
        ),
        ["--allow-modified-data"],
        "not UTF-8 text (invalid continuation byte on line 2)",
    ),
    ("not the official release", lambda r: None, [], "--allow-modified-data"),
    (
        "Latin-1 on a later line",
        lambda r: _append(r / "ml-latest-small" / "movies.csv", "999,Am\xe9lie (2001),Comedy\n".encode("latin-1")),
        ["--allow-modified-data"],
        "not UTF-8 text (invalid continuation byte on line 32)",
    ),
    (
        "empty movies.csv",
        lambda r: (r / "ml-latest-small" / "movies.csv").write_bytes(b""),
        ["--allow-modified-data"],
        "movies.csv is empty",
    ),
    (
        "header-only movies.csv",
        lambda r: (r / "ml-latest-small" / "movies.csv").write_text("movieId,title,genres\n"),
        ["--allow-modified-data"],
        "movies.csv holds no movies (a header line only)",
    ),
    (
        "header-only ratings.csv",
        lambda r: _ratings(r).write_text("userId,movieId,rating,timestamp\n"),
        ["--allow-modified-data"],
        "ratings.csv holds no ratings",
    ),
]


@pytest.mark.parametrize("name, breaks, flags, says", MOVIELENS_ROWS, ids=[r[0] for r in MOVIELENS_ROWS])
def test_bad_movielens_files(movielens_root, tmp_path, capsys, name, breaks, flags, says):
    breaks(movielens_root)
    out = tmp_path / "out"
    err = _expect_one_error(
        main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, *flags]), capsys, says
    )
    assert "Warning" not in err, err  # no library's warning before the one line
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
    _expect_one_error(
        main(
            [
                "run",
                "--profile",
                "smoke",
                "--data-dir",
                str(movielens_root),
                "--offline",
                "--config",
                str(path),
                "--out",
                str(out),
            ]
        ),
        capsys,
        says,
    )
    assert not (out / "metrics.json").exists()


def test_config_naming_a_directory(tmp_path, capsys):
    _expect_one_error(
        main(["run", "--profile", "smoke", "--config", str(tmp_path), "--out", str(tmp_path / "o")]),
        capsys,
        "is a directory",
    )


def test_out_under_a_regular_file(movielens_root, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _expect_one_error(
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(tmp_path / "file" / "run"),
                *FAST,
                "--allow-modified-data",
            ]
        ),
        capsys,
        "cannot create the run folder",
    )


def test_out_on_a_read_only_file_system(movielens_root, tmp_path, capsys, monkeypatch):
    """EROFS as the kernel raises it (a real read-only mount needs root, and root ignores chmod)."""
    import errno

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    _expect_one_error(
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(tmp_path / "ro" / "run"),
                *FAST,
                "--allow-modified-data",
            ]
        ),
        capsys,
        "Read-only file system",
    )


@pytest.mark.parametrize("device, says", [("banana", "--device must be"), ("cuda", "no CUDA device")])
def test_unusable_devices_fail_before_any_data(tmp_path, capsys, device, says):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    # no data at all: the device must be refused before anything looks for it
    _expect_one_error(
        main(
            [
                "vision",
                "probe",
                "--data-dir",
                str(tmp_path / "nothing"),
                "--offline",
                "--device",
                device,
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        says,
    )


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--pad", "20"], "--pad 20: input should be less than or equal to 16"),
        (["--weight-decay", "-1"], "--weight-decay -1.0: input should be greater than or equal to 0"),
    ],
)
def test_out_of_range_recipe_flags_fail_before_any_data(tmp_path, capsys, flags, says):
    _expect_one_error(
        main(
            [
                "vision",
                "finetune",
                "--data-dir",
                str(tmp_path / "nothing"),
                "--offline",
                *flags,
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        says,
    )


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    from conftest import write_movielens

    root = tmp_path_factory.mktemp("data")
    write_movielens(root / "ml-latest-small")
    out = tmp_path_factory.mktemp("runs") / "movies"
    assert main(["movies", "--data-dir", str(root), "--out", str(out), *FAST, "--allow-modified-data"]) == 0
    return out


_copy = copy_run


RECOMMEND_ROWS: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    (
        "truncated npz",
        lambda r: (r / "artefacts" / "embeddings.npz").write_bytes(
            (r / "artefacts" / "embeddings.npz").read_bytes()[:200]
        ),
        [],
        "embeddings.npz is damaged",
    ),
    ("empty npz", lambda r: (r / "artefacts" / "embeddings.npz").write_bytes(b""), [], "embeddings.npz is damaged"),
    (
        "items.csv of the wrong length",
        lambda r: (r / "artefacts" / "items.csv").write_text(
            "\n".join((r / "artefacts" / "items.csv").read_text().splitlines()[:-3]) + "\n"
        ),
        [],
        "different runs",
    ),
    ("malformed config.json", lambda r: (r / "config.json").write_text('{"study": {}}'), [], "config.json"),
    ("min-likes above every movie", lambda r: None, ["--min-likes", "100000"], "no movie has >= 100000 likes"),
    (
        "negative min-likes",
        lambda r: None,
        ["--min-likes", "-5"],
        "--min-likes -5: input should be greater than or equal to 0",
    ),
    (
        "top far above the catalogue",
        lambda r: None,
        ["--top", "100000"],
        "--top 100000: input should be less than or equal to 1000",
    ),
    (
        "items.csv cut inside a line",
        lambda r: _cut(r / "artefacts" / "items.csv"),
        [],
        "items.csv is damaged or was edited",
    ),
    (
        "items.csv with a non-numeric count",
        lambda r: _replace_cell(r / "artefacts" / "items.csv", "likes", "many"),
        [],
        "column 'likes' holds 'many'",
    ),
    (
        "items.csv without its likes",
        lambda r: _drop_column(r / "artefacts" / "items.csv", "likes"),
        [],
        "lacks column(s) ['likes']",
    ),
    (
        "catalogue.csv removed",
        lambda r: (r / "artefacts" / "catalogue.csv").unlink(),
        [],
        "catalogue.csv is missing from the run folder",
    ),
    (
        "catalogue.csv cut inside a line",
        lambda r: _cut(r / "artefacts" / "catalogue.csv"),
        [],
        "catalogue.csv is damaged or was edited",
    ),
    (
        "catalogue.csv with a non-numeric id",
        lambda r: _replace_cell(r / "artefacts" / "catalogue.csv", "movieId", "x1"),
        [],
        "column 'movieId' holds 'x1'",
    ),
    (
        "config.json cut short",
        lambda r: (r / "config.json").write_text('{"movies": {"metric": "cos'),
        [],
        "config.json is damaged",
    ),
    (
        "a binary config.json",
        lambda r: (r / "config.json").write_bytes(b"\xff\xfe\x00"),
        [],
        "config.json is damaged",
    ),
    (
        "vectors that are not finite",
        lambda r: _poison_vectors(r / "artefacts" / "embeddings.npz"),
        [],
        "embeddings.npz holds vectors that are not finite numbers (NaN or infinity in 2 of them)",
    ),
]


def _poison_vectors(path: Path) -> None:
    """The saved embedding with two vectors made NaN and infinite (as a diverged fit or an edit would leave them)."""
    with np.load(path) as z:
        arrays = dict(z)
    arrays["v"][0, 0], arrays["v"][3, 1] = np.nan, np.inf
    np.savez(path, **arrays)


def _cut(path: Path) -> None:
    """The file as a full disk or an interrupted copy leaves it: cut in the middle of a line."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 3].rstrip(b"\n") + b'"')


def _replace_cell(path: Path, column: str, value: str) -> None:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[1, column] = value
    df.to_csv(path, index=False)


def _drop_column(path: Path, column: str) -> None:
    import pandas as pd

    pd.read_csv(path).drop(columns=[column]).to_csv(path, index=False)


@pytest.mark.parametrize("name, breaks, flags, says", RECOMMEND_ROWS, ids=[r[0] for r in RECOMMEND_ROWS])
def test_recommend_on_bad_runs_and_flags(saved_run, tmp_path, capsys, name, breaks, flags, says):
    run = _copy(saved_run, tmp_path)
    breaks(run)
    _expect_one_error(main(["recommend", "Toy Story", "--run", str(run), *flags]), capsys, says)
    if not flags and "is missing" not in says:  # a damaged file: the report's explorer reads it with the same code
        _expect_one_error(main(["report", str(run)]), capsys, says)


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
    assert (
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(out),
                *FAST,
                "--allow-modified-data",
                "--optimizers",
                "rmsprop",
            ]
        )
        == 0
    )
    assert set(json.loads((out / "config.json").read_text())["movies"]["grid"]) == {"rmsprop"}


_expect_one_error = expect_one_error


def test_npz_helper_is_a_real_archive(saved_run):
    # the rows above break a file that is valid to begin with
    with np.load(saved_run / "artefacts" / "embeddings.npz") as z:
        assert z["v"].ndim == 2


def test_missing_test_batch_names_only_that_file(cifar_root, tmp_path, capsys):
    (cifar_root / "cifar-10-batches-py" / "test_batch").unlink()
    err = _expect_one_error(
        main(
            [
                "vision",
                "probe",
                "--data-dir",
                str(cifar_root),
                "--offline",
                "--weights",
                "none",
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        "test_batch missing",
    )
    assert "data_batch_1" not in err


def test_a_text_file_as_weights(cifar_root, tmp_path, capsys):
    weights = tmp_path / "weights.txt"
    weights.write_text("these are not weights\n")
    _expect_one_error(
        main(
            [
                "vision",
                "probe",
                "--data-dir",
                str(cifar_root),
                "--offline",
                "--weights",
                str(weights),
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        "is not a PyTorch state-dict file",
    )


def test_dim_sweep_zero_is_refused_before_any_work(movielens_root, tmp_path, capsys):
    out = tmp_path / "o"
    _expect_one_error(
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(out),
                *FAST,
                "--allow-modified-data",
                "--dim-sweep",
                "0",
            ]
        ),
        capsys,
        "--dim-sweep",
    )
    assert not (out / "metrics.json").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="is a directory"):
        main(["run", "--profile", "smoke", "--config", str(tmp_path), "--out", str(tmp_path / "o"), "--debug"])


def test_recommend_warns_when_the_query_has_fewer_likes_than_min_likes(saved_run, capsys):
    import pandas as pd

    items = pd.read_csv(saved_run / "artefacts" / "items.csv")
    rare = items.sort_values("likes").iloc[0]
    assert rare["likes"] < items["likes"].max()  # some movies stay eligible
    assert (
        main(
            [
                "recommend",
                str(rare["title"]),
                "--run",
                str(saved_run),
                "--min-likes",
                str(int(rare["likes"]) + 1),
                "--top",
                "3",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"embedlab: note: {rare['title']} itself has only {int(rare['likes'])} likes" in err


def test_finetune_help_states_the_configured_defaults(capsys):
    from embedlab.config import FinetuneConfig
    from embedlab.profiles import PROFILES

    with pytest.raises(SystemExit):
        main(["vision", "finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    gpu = PROFILES["gpu"]["finetune"]
    assert (
        f"(default {FinetuneConfig().cpu_size}; range [32, 512])" in text
        and f"(default {FinetuneConfig().epochs}; profile gpu: {gpu['epochs']};" in text
    )
    assert f"(default {FinetuneConfig().batch_size}; profile gpu: {gpu['batch_size']};" in text


def test_a_real_bug_is_not_reported_as_a_user_error(monkeypatch, saved_run):
    """Only the project's UserError becomes one line: a plain ValueError from a bug keeps its traceback."""
    from embedlab.movies import saved

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(saved.MovieEmbedding, "similar", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["recommend", "Toy Story", "--run", str(saved_run)])


def test_every_project_error_is_a_user_error_and_keeps_its_builtin():
    from embedlab.data import ChecksumError, DataNotFoundError
    from embedlab.errors import UserError
    from embedlab.movies.titles import TitleLookupError
    from embedlab.runs import RunFolderError
    from embedlab.vision.finetune import CheckpointMismatch, TrainingDiverged

    for cls, builtin in (
        (ChecksumError, ValueError),
        (DataNotFoundError, FileNotFoundError),
        (TitleLookupError, LookupError),
        (RunFolderError, FileExistsError),
        (CheckpointMismatch, ValueError),
        (TrainingDiverged, RuntimeError),
    ):
        assert issubclass(cls, UserError) and issubclass(cls, builtin), cls


# ---- 1. text from data never becomes markup ----


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text a reader sees (character references resolved)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    from conftest import HOSTILE_TITLES, write_hostile_movielens

    root = tmp_path_factory.mktemp("hostile")
    write_hostile_movielens(root / "ml-latest-small")
    # the folder's name is in the report too
    out = tmp_path_factory.mktemp("runs") / "<svg onload=\"document.title='pwned'\">`run"
    queries = ["Toy Story", HOSTILE_TITLES[1], HOSTILE_TITLES[0], HOSTILE_TITLES[3]]
    assert (
        main(
            [
                "movies",
                "--data-dir",
                str(root),
                "--out",
                str(out),
                *FAST,
                "--allow-modified-data",
                *[a for q in queries for a in ("--query", q)],
            ]
        )
        == 0
    )
    return out


def test_hostile_titles_stay_text_in_report_md_and_html(hostile_run):
    from conftest import HOSTILE_TITLES

    # code blocks show text as text
    md = re.sub(r"```json\n.*?\n```", "", (hostile_run / "report.md").read_text(), flags=re.S)
    for raw in ("<img", "<script", "<svg", "<!--", "</script"):
        assert raw not in md, raw
    page = _Page()
    page.feed((hostile_run / "report.html").read_text())
    scripts = [a for t, a in page.tags if t == "script"]
    # the explorer's data and its code, nothing else
    assert len(scripts) == 2 and scripts[0].get("type") == "application/json"
    assert not [(t, k) for t, a in page.tags for k in a if k.lower().startswith("on")]  # no event handler anywhere
    assert not [t for t, _ in page.tags if t in ("svg", "b", "iframe", "object")]
    assert all(a["src"].startswith("data:image/png;base64,") for t, a in page.tags if t == "img")
    assert not [a for t, a in page.tags if t == "a" and "javascript" in (a.get("href") or "")]
    text = "".join(page.text)
    for title in HOSTILE_TITLES[:4]:  # the query headings and the tables show them as the catalogue spells them
        assert title in text, title
    html = (hostile_run / "report.html").read_text()
    payload = html.split('id="explorer-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in payload and ">" not in payload
    assert set(HOSTILE_TITLES) <= set(json.loads(payload)["titles"])


def test_hostile_titles_in_the_browser_run_nothing_and_the_explorer_answers(hostile_run, tmp_path):
    from browser_check import _driver, explorer_lists
    from conftest import HOSTILE_TITLES

    html = hostile_run / "report.html"
    driver = _driver(tmp_path / "b1")
    try:
        driver.get(html.resolve().as_uri())
        assert driver.execute_script("return document.title") == f"embedlab report — {hostile_run.name}"
        headings = driver.execute_script("return [...document.querySelectorAll('h4')].map(h => h.textContent)")
    finally:
        driver.quit()
    assert HOSTILE_TITLES[1] in headings and HOSTILE_TITLES[0] in headings
    lists = explorer_lists(html, tmp_path / "b2", HOSTILE_TITLES, "cosine")
    assert all(len(rows) == 10 for rows in lists.values()), lists


# ---- 3 and 4. settings that cannot work: refused before any result is written ----

MOVIES_FLAG_ROWS = [
    ("an empty list of optimisers", ["--optimizers", ""], "--optimizers '' names no optimiser"),
    ("commas only for optimisers", ["--optimizers", " , "], "names no optimiser"),
    ("an empty query", ["--query", ""], "--query '' is not a title"),
    ("a held-out fraction that leaves no training users", ["--holdout-fraction", "0.999"], "--holdout-fraction 0.999"),
    (
        "a held-out fraction that leaves too few users to tune the anchors",
        ["--holdout-fraction", "0.95", "--anchors", "ease"],
        "too few for --anchor-validation-fraction 0.2",
    ),
    ("negative seed", ["--seed", "-1"], "--seed -1: input should be greater than or equal to 0"),
    (
        "seed beyond 32 bits",
        ["--seed", str(2**70)],
        "--seed 1180591620717411303424: input should be less than or equal to 4294967295",
    ),
    ("top far above the catalogue", ["--top", "100000"], "--top 100000: input should be less than or equal to 1000"),
    ("negative min-likes", ["--min-likes", "-1"], "--min-likes -1: input should be greater than or equal to 0"),
    ("min-likes above every movie", ["--min-likes", "100000"], "--min-likes 100000: 0 movie(s) have that many likes"),
    (
        "dimension above the catalogue",
        ["--dim", "999"],
        "--dim 999 is not below the number of movies with a like (M = 30)",
    ),
    (
        "dimension sweep above the catalogue",
        ["--dim-sweep", "8,999"],
        "--dim-sweep 999 is not below the number of movies",
    ),
    ("dimension above any run's", ["--dim", "99999"], "--dim 99999: input should be less than or equal to 4096"),
    (
        "an optimiser without rates",
        ["--lrs", "adam="],
        "--optimizers/--lrs {'sgd': [3e-05, 0.0001], 'adam': []}, at ['adam']: list should",
    ),
    ("rates without an optimiser", ["--lrs", "0.1"], "expected OPTIMISER=LR1,LR2"),
    ("a zero rate", ["--lrs", "adam=0"], "input should be greater than 0"),
    (
        "an unknown optimiser",
        ["--optimizers", "lbfgs"],
        "{'lbfgs': []}, at ['lbfgs']: input should be 'sgd', 'nesterov', 'adagrad'",
    ),
    (
        "a like threshold off the scale",
        ["--like-threshold", "9"],
        "--like-threshold 9.0: input should be less than or equal to 5",
    ),
    ("a zero dimension", ["--dim", "0"], "--dim 0: input should be greater than or equal to 1"),
    ("zero iterations", ["--iterations", "0"], "--iterations 0: input should be greater than or equal to 1"),
    ("an unknown metric", ["--metric", "euclid"], "argument --metric: invalid choice: 'euclid'"),
    ("a flag that does not exist", ["--bogus"], "does not know --bogus"),
    ("a number that is not one", ["--dim", "ten"], "argument --dim: invalid int value: 'ten'"),
    ("an unknown query", ["--query", "Zzyzx Road Nonexistent"], "Zzyzx Road Nonexistent"),
    ("a synthetic shape that is not one", ["--synthetic", "huge"], "unknown synthetic size 'huge'"),
    (
        "a synthetic shape and a release",
        ["--synthetic", "2x", "--dataset", "ml-25m"],
        "--dataset ml-25m would be ignored",
    ),
]


@pytest.mark.parametrize("name, flags, says", MOVIES_FLAG_ROWS, ids=[r[0] for r in MOVIES_FLAG_ROWS])
def test_movies_settings_that_cannot_work(movielens_root, tmp_path, capsys, name, flags, says):
    out = tmp_path / "out"
    err = _expect_one_error(
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(out),
                *with_flags(FAST, *flags),
                "--allow-modified-data",
            ]
        ),
        capsys,
        says,
    )
    assert "usage:" not in err
    assert not (out / "tables").is_dir() or not any((out / "tables").iterdir())  # nothing was computed first


def test_a_sweep_in_which_every_run_diverges_says_which_rates(movielens_root, tmp_path, capsys):
    out = tmp_path / "out"
    _expect_one_error(
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(out),
                *FAST,
                "--allow-modified-data",
                "--optimizers",
                "sgd",
                "--lrs",
                "sgd=1000",
            ]
        ),
        capsys,
        "every run of the sweep diverged (sgd lr=1000)",
    )
    assert json.loads((out / "metrics.json").read_text())["movies_run"]["status"].startswith("failed: every run")
    assert (out / "tables" / "query_likes.csv").is_file()  # what 2A computed is kept


STUDY_CONFIG_ROWS = [
    ({"movie": {"dim": 4}}, "unknown section(s) ['movie']"),
    ({"probe": {"max_iter": 0}}, "probe.max_iter = 0: input should be greater than or equal to 1"),
    ({"movies": {"init_scale": 0.0}}, "movies.init_scale = 0.0: input should be greater than 0"),
    ({"movies": {"divergence_factor": 0}}, "movies.divergence_factor = 0: input should be greater than 1"),
    ({"movies": {"top_k": 100000}}, "movies.top_k = 100000"),
    ({"movies": {"anchors": ["knn"]}}, "movies.anchors[0] = ['knn']: input should be 'ease' or 'als'"),
    ({"movies": {"grid": {"adam": [float("inf")]}}}, "movies.grid['adam'][0]"),
    ({"finetune": {"seed": -1}}, "finetune.seed = -1"),
    ({"finetune": {"lr": 0}}, "finetune.lr = 0: input should be greater than 0"),
    ({"finetune": {"optimizer": "lion"}}, "finetune.optimizer = 'lion': input should be 'sgd' or 'adamw'"),
    ({"study": {"profile": "foo"}}, "study.profile"),
    ({"study": 5}, "section 'study'"),
    ({"steps": 5}, "section 'steps' of"),
    ({"steps": ["probe", 3]}, "must be a list of step names, got ['probe', 3]"),
]


@pytest.mark.parametrize("config, says", STUDY_CONFIG_ROWS, ids=[json.dumps(c) for c, _ in STUDY_CONFIG_ROWS])
def test_study_config_values_that_cannot_work(movielens_root, tmp_path, capsys, config, says):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "out"
    _expect_one_error(
        main(["run", "--data-dir", str(movielens_root), "--offline", "--config", str(path), "--out", str(out)]),
        capsys,
        says,
    )
    assert not out.exists()  # refused before the run folder is made


def test_a_misspelt_section_in_a_movies_config_is_refused(movielens_root, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"movies": {"dim": 4}, "movie": {"dim": 8}}))
    _expect_one_error(
        main(["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "o"), "--config", str(path)]),
        capsys,
        "unknown section(s) ['movie']",
    )


def test_resume_with_a_config_section_that_is_not_an_object(movielens_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--profile",
                "smoke",
                "--steps",
                "movies",
                "--data-dir",
                str(movielens_root),
                "--offline",
                "--allow-modified-data",
                "--config",
                str(_write(tmp_path / "small.json", {"movies": {"dim": 4, "dim_sweep": [], "embedding_map": False}})),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    _expect_one_error(
        main(["run", "--resume", str(run), "--config", str(_write(tmp_path / "fix.json", {"movies": [1, 2]}))]),
        capsys,
        "section 'movies' of",
    )


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_finetune_resume_refuses_flags_it_would_ignore(tmp_path, capsys):
    _expect_one_error(
        main(
            [
                "vision",
                "finetune",
                "--resume",
                str(tmp_path / "RUN"),
                "--epochs",
                "3",
                "--lr",
                "0.5",
                "--out",
                str(tmp_path / "Y"),
            ]
        ),
        capsys,
        "which --epochs, --lr, --out would change",
    )
    assert not (tmp_path / "Y").exists()


#: A probe of seconds on the fixture's 30 training images per class.
TINY_PROBE = [
    "--backbone",
    "resnet18",
    "--weights",
    "none",
    "--size",
    "32",
    "--val-per-class",
    "5",
    "--offline",
    "--l2-grid",
    "0.1",
]

VISION_ROWS = [
    ("no test images", ["--test-per-class", "0"], "--test-per-class 0: input should be greater than or equal to 1"),
    ("negative test images", ["--test-per-class", "-1"], "--test-per-class -1"),
    ("a negative seed", ["--seed", "-1"], "--seed -1"),
    ("a seed beyond 32 bits", ["--seed", str(2**64)], "--seed 18446744073709551616"),
    ("a tiny resolution", ["--size", "8"], "--size 8: input should be greater than or equal to 32"),
    ("an empty L2 grid", ["--l2-grid", ","], "--l2-grid []"),
    ("a negative L2 strength", ["--l2-grid", "-1"], "--l2-grid [-1.0]"),
    ("an unknown backbone", ["--backbone", "vgg99"], "unknown backbone 'vgg99'"),
]


@pytest.mark.parametrize("name, flags, says", VISION_ROWS, ids=[r[0] for r in VISION_ROWS])
def test_vision_settings_that_cannot_work(tmp_path, capsys, name, flags, says):
    # no data at all: every one of these must be refused before anything looks for it
    _expect_one_error(
        main(
            [
                "vision",
                "probe",
                "--data-dir",
                str(tmp_path / "nothing"),
                "--offline",
                "--weights",
                "none",
                *flags,
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        says,
    )
    assert not (tmp_path / "o").exists()


def test_a_cache_dir_that_is_a_file_is_refused_before_extraction(cifar_root, tmp_path, capsys, monkeypatch):
    from embedlab.vision import steps, timing

    (tmp_path / "cache").write_text("a file, not a folder")
    for module in (steps, timing):
        monkeypatch.setattr(
            module, "extract", lambda *a, **k: pytest.fail("extraction ran before the cache was checked")
        )
    _expect_one_error(
        main(
            [
                "vision",
                "probe",
                *TINY_PROBE,
                "--data-dir",
                str(cifar_root),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        "cannot use the feature cache",
    )


def test_weights_with_the_right_names_and_the_wrong_shapes(cifar_root, tmp_path, capsys):
    import torch

    from embedlab.vision.backbones import create_backbone

    state = create_backbone("resnet18", "none", 0).model.state_dict()
    state["fc.weight"] = torch.zeros(7, 512)
    torch.save(state, tmp_path / "w.pt")
    _expect_one_error(
        main(
            [
                "vision",
                "probe",
                "--data-dir",
                str(cifar_root),
                "--offline",
                "--weights",
                str(tmp_path / "w.pt"),
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        "fc.weight (7, 512) (expected (1000, 512))",
    )


def test_a_damaged_feature_cache_entry_is_a_miss(cifar_root, tmp_path, capsys, caplog):
    """A cut or replaced cache file is computed again (with a warning) and replaced; the results are those of a clean
    cache."""
    args = ["vision", "probe", *TINY_PROBE, "--data-dir", str(cifar_root), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    entries = sorted((tmp_path / "cache" / "features").glob("*.pt"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # cut
    entries[1].write_bytes(b"not a tensor")  # replaced
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all(
        "embedlab: warning: the cached features" in w and "are damaged" in w for w in warnings
    ), warnings
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text())["probe"] for r in "ab")
    assert a["test_accuracy"] == b["test_accuracy"] and b["features_cached"] is False
    assert not list((tmp_path / "cache" / "features").glob("*.tmp")) and not list(
        (tmp_path / "cache" / "features").glob(".*.tmp")
    )


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "finetune_checkpoint.pt is damaged"),
        (lambda p: p.write_bytes(b"junk"), "finetune_checkpoint.pt is damaged"),
        (lambda p: p.write_bytes(b"PK\x03\x04"), "finetune_checkpoint.pt is damaged"),
        (lambda p: p.write_bytes(b""), "finetune_checkpoint.pt is damaged"),
    ],
    ids=["cut", "replaced", "a zip header alone", "empty"],
)
def test_a_damaged_checkpoint_is_one_line(tmp_path, damage, says):
    import torch

    from embedlab.vision.finetune import CheckpointMismatch, load_checkpoint

    path = tmp_path / "finetune_checkpoint.pt"
    torch.save(
        {"epoch": 1, "model": {"w": torch.zeros(300)}, "optimizer": {}, "scheduler": {}, "history": {}, "recipe": {}},
        path,
    )
    assert load_checkpoint(path)["epoch"] == 1
    damage(path)
    with pytest.raises(CheckpointMismatch, match=says):
        load_checkpoint(path)


# ---- 2. no folder lost, no two runs in one folder, no partial file under a final name ----


def test_a_users_folder_is_never_cleared_or_used(movielens_root, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"movies": {"dim": 4}}')
    (mine / "report.md").write_text("my own notes")
    _expect_one_error(
        main(["movies", "--data-dir", str(movielens_root), "--out", str(mine), *FAST, "--allow-modified-data"]),
        capsys,
        "was not made by embedlab",
    )
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "report.md"]
    assert (mine / "report.md").read_text() == "my own notes"


def test_two_runs_on_one_out_never_both_run(movielens_root, tmp_path):
    out = tmp_path / "shared-out"
    cmd = [
        sys.executable,
        "-m",
        "embedlab",
        "movies",
        "--data-dir",
        str(movielens_root),
        "--out",
        str(out),
        *FAST,
        "--allow-modified-data",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2)
    lines = [line for line in err.splitlines() if line.startswith("embedlab: error:")]
    assert len(lines) == 1 and ("in use by another embedlab run" in lines[0] or "already holds results" in lines[0]), (
        err
    )
    assert json.loads((out / "metrics.json").read_text())["movies_run"]["total_seconds"] > 0  # one whole run, not a mix


def test_a_folder_left_by_a_failed_set_up_is_usable_again(cifar_root, tmp_path, capsys):
    (tmp_path / "bad.pt").write_text("not weights")
    out = tmp_path / "o"
    _expect_one_error(
        main(
            [
                "vision",
                "probe",
                *with_flags(TINY_PROBE, "--weights", str(tmp_path / "bad.pt")),
                "--data-dir",
                str(cifar_root),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--out",
                str(out),
            ]
        ),
        capsys,
        "is not a PyTorch state-dict file",
    )
    assert (
        main(
            [
                "vision",
                "probe",
                *TINY_PROBE,
                "--data-dir",
                str(cifar_root),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--out",
                str(out),
            ]
        )
        == 0
    )


def _disk_full_for(monkeypatch: pytest.MonkeyPatch, name_part: str) -> None:
    """Simulated ENOSPC: writing a file whose name contains ``name_part`` gets part of the way, then the disk is
    full."""
    import errno

    import embedlab.files as files

    real_open = open

    def full(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and name_part in str(path):
            f.write(b"\0" * 100)
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return f

    monkeypatch.setattr(files, "open", full, raising=False)


def test_a_full_disk_under_out_is_one_line_and_leaves_no_partial_file(movielens_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    _disk_full_for(monkeypatch, "embeddings.npz")
    err = _expect_one_error(
        main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data"]),
        capsys,
        f"no space left in {out / 'artefacts'} to write embeddings.npz (",
    )
    assert "needed" in err and "free)" in err
    assert not (out / "artefacts" / "embeddings.npz").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert json.loads((out / "metrics.json").read_text())["movies_run"]["status"].startswith("failed: no space left")


def test_a_full_cache_dir_leaves_no_partial_entry(cifar_root, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    _disk_full_for(monkeypatch, "-train-")
    _expect_one_error(
        main(
            [
                "vision",
                "probe",
                *TINY_PROBE,
                "--data-dir",
                str(cifar_root),
                "--cache-dir",
                str(cache),
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        f"no space left in {cache / 'features'} to write resnet18-",
    )
    # neither the features, nor their stats, nor a .tmp
    assert not [p.name for p in (cache / "features").iterdir() if "-train-" in p.name]


def test_a_sparse_ratings_file_is_refused_before_reading(movielens_root, tmp_path, capsys):
    ratings = movielens_root / "ml-latest-small" / "ratings.csv"
    with open(ratings, "r+b") as f:
        f.truncate(2 * 1000**3)  # 2 GB, nearly all of it a hole (NUL bytes), as a damaged copy can be
    _expect_one_error(
        main(
            ["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "o"), *FAST, "--allow-modified-data"]
        ),
        capsys,
        "ratings.csv holds NUL bytes near byte 0, so it is not a CSV text file",
    )


def test_a_ratings_file_larger_than_memory_is_refused_with_the_estimate(movielens_root, tmp_path, capsys, monkeypatch):
    import embedlab.data as data

    monkeypatch.setattr(data, "available_memory", lambda: 2 * 1024**3)
    _expect_one_error(
        main(
            ["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "o"), *FAST, "--allow-modified-data"]
        ),
        capsys,
        "GiB of memory but 2.0 GiB are available",
    )


def test_ctrl_c_says_what_is_kept(movielens_root, tmp_path, capsys, monkeypatch):
    from embedlab.movies import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "step_2b_fit", interrupted)
    out = tmp_path / "o"
    assert main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == (
        "embedlab: interrupted: finished steps are saved in the run folder; continue with: "
        f"embedlab movies --resume {out}"
    ), err
    assert json.loads((out / "metrics.json").read_text())["movies_run"]["status"] == "interrupted: KeyboardInterrupt"


def test_report_of_a_run_that_did_not_finish_says_so(movielens_root, tmp_path, capsys):
    out = tmp_path / "o"
    _expect_one_error(
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(out),
                *FAST,
                "--allow-modified-data",
                "--optimizers",
                "sgd",
                "--lrs",
                "sgd=1000",
            ]
        ),
        capsys,
        "diverged",
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert (
        "**This run did not finish.**" in report and "the movie study failed: every run of the sweep diverged" in report
    )
    # a study whose process was killed mid-step: its ledger says "running", and nobody holds the folder
    metrics.pop("movies_run")
    metrics["steps"] = {"movies": {"status": "running"}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", str(out)]) == 0
    assert "step movies was interrupted: its process ended while it ran" in (out / "report.md").read_text()


# ---- a property over config files: every value either reaches the study exactly or is one error line ----

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        [0, 1, -1, 0.0, 0.5, 1.0, 2, 5000, "cosine", "tsne", "adamw", "none", "", [], {}, [0], [1.0], {"adam": [0.1]}]
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["adam", "sgd", "x", ""]), inner, max_size=2)
    ),
    max_leaves=4,
)
FIELDS = [
    (section, f.name)
    for section, cls in (("probe", "ProbeConfig"), ("finetune", "FinetuneConfig"), ("movies", "MoviesConfig"))
    for f in dataclasses.fields(getattr(__import__("embedlab.config", fromlist=[cls]), cls))
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_config_value_reaches_the_study_or_is_one_error_line(tmp_path, capsys, monkeypatch, where, value):
    from embedlab import commands

    section, name = where
    seen = []
    monkeypatch.setattr(commands, "_study_on_rank", lambda cfg, run, resume: seen.append(cfg) or 0)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({section: {name: value}}))
    out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
    status = main(["run", "--profile", "smoke", "--config", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status == 0:
        got = getattr(getattr(seen[0], section), name)
        # the value, not a coercion
        assert got == value or (isinstance(value, float) and value != value), (where, value, got)
    else:
        assert status == 2 and len([line for line in err.splitlines() if line.startswith("embedlab: error:")]) == 1, err


@pytest.mark.parametrize(
    "command, flags, says",
    [
        (
            "probe",
            ["--batch-size", "50000"],
            "--batch-size 50000 at 32 px needs at least 7.2 GiB for its inference activations but 2.0 GiB",
        ),
        (
            "finetune",
            ["--batch-size", "50000", "--epochs", "1"],
            "--batch-size 50000 at 32 px needs at least 35.3 GiB for its training",
        ),
        (
            "finetune",
            ["--eval-batch-size", "50000", "--epochs", "1"],
            "--eval-batch-size 50000 at 32 px needs at least 7.2 GiB",
        ),
    ],
    ids=["probe extraction", "training step", "evaluation"],
)
def test_a_batch_larger_than_memory_is_refused_before_the_data(tmp_path, capsys, monkeypatch, command, flags, says):
    """The largest batch the schema allows (the training set) on a machine with 2 GiB free."""
    from embedlab import data

    monkeypatch.setattr(data, "available_memory", lambda: 2 * 1024**3)
    _expect_one_error(
        main(
            [
                "vision",
                command,
                *TINY_PROBE[:-2],
                "--data-dir",
                str(tmp_path / "nothing"),
                "--device",
                "cpu",
                *flags,
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        capsys,
        says,
    )


REPORT_ROWS: list[tuple[str, Callable[[Path], None], str]] = [
    ("metrics.json cut short", lambda r: _cut(r / "metrics.json"), "metrics.json is damaged"),
    (
        "metrics.json not an object",
        lambda r: (r / "metrics.json").write_text("[]"),
        "metrics.json is damaged (not a JSON object)",
    ),
    (
        "config.json without its section",
        lambda r: (r / "config.json").write_text('{"probe": {}}'),
        "has no 'movies' section",
    ),
    ("config.json not an object", lambda r: (r / "config.json").write_text('"movies"'), "has no 'movies' section"),
    ("not a run folder", lambda r: (r / "config.json").unlink(), "is not a run folder (no config.json)"),
]


@pytest.mark.parametrize("name, breaks, says", REPORT_ROWS, ids=[r[0] for r in REPORT_ROWS])
def test_report_on_damaged_run_folders(saved_run, tmp_path, capsys, name, breaks, says):
    run = _copy(saved_run, tmp_path)
    breaks(run)
    _expect_one_error(main(["report", str(run)]), capsys, says)


@pytest.mark.parametrize(
    "env, says",
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a number of processes"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not set"),
        (
            {"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
            "but RANK or LOCAL_RANK is not a number as torchrun sets them",
        ),
    ],
    ids=["not a number", "without torchrun", "a rank that is not a number"],
)
def test_a_distributed_environment_torchrun_did_not_make(movielens_root, tmp_path, capsys, monkeypatch, env, says):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _expect_one_error(
        main(
            ["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "o"), *FAST, "--allow-modified-data"]
        ),
        capsys,
        says,
    )


@pytest.mark.parametrize(
    "path, says",
    [
        ("/proc/self/mem", "cannot be read"),
        ("/dev/null", "is not a regular file"),
        ("/dev/zero", "is not a regular file"),  # read until memory ran out
        ("{fifo}", "is not a regular file"),  # a read would wait for a writer forever
        ("{big}", "more than the 1,000,000 a config file can be"),
    ],
    ids=["unreadable", "/dev/null", "/dev/zero", "a named pipe", "over 1 MB"],
)
def test_a_config_file_that_cannot_be_read(tmp_path, capsys, path, says):
    import os

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big.json").write_text('{"movies": {"dim": 4}, "pad": "' + "x" * 1_000_001 + '"}')
    path = path.format(fifo=tmp_path / "fifo", big=tmp_path / "big.json")
    _expect_one_error(main(["run", "--config", path, "--out", str(tmp_path / "o")]), capsys, says)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 7000000000 bytes"
        ),
    ],
    ids=["MemoryError", "torch's CPU allocator"],
)
def test_running_out_of_memory_is_one_line_and_keeps_what_finished(movielens_root, tmp_path, capsys, monkeypatch, exc):
    from embedlab.movies import pipeline

    def exhausted(*args, **kwargs):
        raise exc

    monkeypatch.setattr(pipeline, "step_holdout", exhausted)
    out = tmp_path / "o"
    _expect_one_error(
        main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data"]),
        capsys,
        "out of memory",
    )
    assert (out / "artefacts" / "embeddings.npz").is_file()  # the fit finished before memory ran out: it is kept


def test_a_runtime_error_that_is_not_memory_keeps_its_traceback(movielens_root, tmp_path, monkeypatch):
    from embedlab.movies import pipeline

    def bug(*args, **kwargs):
        raise RuntimeError("shape mismatch: a bug")

    monkeypatch.setattr(pipeline, "step_holdout", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(
            ["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "o"), *FAST, "--allow-modified-data"]
        )


@pytest.mark.parametrize(
    "device, cuda",
    [("cuda:0", True), ("cuda:1", True), ("cuda", True), (None, True), ("auto", True), ("cpu", False), ("mps", False)],
)
def test_every_cuda_spelling_gets_the_gpu_profile_and_nccl(monkeypatch, device, cuda):
    import torch

    from embedlab import resolve

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve.wants_cuda(device) is cuda and resolve.backend_device(device) == ("cuda" if cuda else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve.wants_cuda(device) is False and resolve.backend_device(device) == "cpu"


def test_a_bug_in_a_downloader_is_not_reported_as_missing_data(tmp_path):
    """Only the failures a download can have (network, disk, a bad archive) become the one-line 'not found' message."""
    from embedlab.vision.cifar10 import ensure_cifar10

    def buggy(data_dir: Path) -> None:
        raise TypeError("a bug in the downloader")

    with pytest.raises(TypeError, match="a bug"):
        ensure_cifar10(tmp_path, buggy)

    def offline(data_dir: Path) -> None:
        raise OSError("Network is unreachable")

    from embedlab.data import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="Network is unreachable"):
        ensure_cifar10(tmp_path, offline)


def test_resuming_from_a_damaged_checkpoint_is_one_line(cifar_root, tmp_path, capsys):
    from embedlab.config import FinetuneConfig
    from embedlab.overrides import to_dict
    from embedlab.runs import RunDir

    run = RunDir.create(tmp_path / "run")
    cfg = FinetuneConfig(
        data_dir=str(cifar_root),
        offline=True,
        backbone="resnet18",
        weights="none",
        size=32,
        epochs=1,
        batch_size=50,
        val_per_class=5,
        probe=False,
        head_init="random",
    )
    run.write_json("config.json", {"finetune": to_dict(cfg)})
    run.save_artefact("finetune_checkpoint.pt", b"PK\x03\x04 cut short")
    run.release()
    _expect_one_error(
        main(["vision", "finetune", "--resume", str(run.path)]), capsys, "finetune_checkpoint.pt is damaged"
    )
    # left for the user to look at
    assert (run.path / "artefacts" / "finetune_checkpoint.pt").read_bytes() == b"PK\x03\x04 cut short"


@pytest.mark.parametrize("content", [b"junk", b""], ids=["replaced", "empty"])
def test_a_damaged_saved_probe_for_lp_ft_is_one_line(tmp_path, content):
    from embedlab.errors import InputError
    from embedlab.runs import RunDir
    from embedlab.store import LP_FT_PROBE, Store

    run = RunDir.create(tmp_path / "run")
    run.save_artefact(LP_FT_PROBE, content)
    with pytest.raises(InputError, match=f"{LP_FT_PROBE} is damaged"):
        Store(run).lp_ft_probe()
    run.release()


def test_runs_started_in_the_same_second_without_out_get_their_own_folders(tmp_path, monkeypatch):
    from datetime import datetime

    from embedlab import commands, runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        commands, "default_run_path", lambda study: runs.default_run_path(study, now=datetime(2026, 1, 2, 3, 4, 5))
    )
    args = argparse.Namespace(out=None)
    first = commands.start_run(args, "movies")  # still running: it holds its folder
    second = commands.start_run(args, "movies")
    assert (first.path.name, second.path.name) == ("20260102-030405-movies", "20260102-030405-movies-2")
    first.release()
    second.release()


def test_version_and_bare_commands(capsys):
    from embedlab import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"embedlab {__version__}"
    _expect_one_error(main([]), capsys, "the following arguments are required: command")
    _expect_one_error(main(["vision"]), capsys, "the following arguments are required: vision_command")


def test_weights_that_are_not_a_file(tmp_path, capsys):
    _expect_one_error(
        main(["vision", "probe", "--weights", str(tmp_path), "--offline", "--out", str(tmp_path / "o")]),
        capsys,
        "is not a regular file",
    )


def test_the_default_recipes_pass_the_batch_memory_check_on_small_machines():
    """The check refuses only what cannot fit under any backbone: the cpu recipe fits in 2 GiB, the gpu recipe (bf16) in
    4 GiB."""
    import torch

    from embedlab.config import FinetuneConfig
    from embedlab.errors import InputError
    from embedlab.profiles import PROFILES
    from embedlab.vision.features import check_batch_fits

    cpu, gpu = FinetuneConfig(), PROFILES["gpu"]["finetune"]
    check_batch_fits(
        "--batch-size", cpu.batch_size, cpu.cpu_size, "training", torch.device("cpu"), available=2 * 1024**3
    )
    check_batch_fits(
        "--batch-size", gpu["batch_size"], gpu["size"], "training", torch.device("cuda"), available=4 * 1024**3
    )
    with pytest.raises(InputError, match="needs at least"):
        check_batch_fits(
            "--batch-size",
            100 * gpu["batch_size"],
            gpu["size"],
            "training",
            torch.device("cuda"),
            available=4 * 1024**3,
        )


# ---- nothing accepted silently: a repeated flag or file, a key given twice, a section of the wrong shape, a number no
# run could finish with, a setting no chosen step reads. Each row: one error line, exit 2, nothing computed. ----


def _file(tmp: Path, text: str, name: str = "c.json") -> str:
    (tmp / name).write_text(text, encoding="utf-8")
    return str(tmp / name)


SILENT_ROWS: list[tuple[str, Callable[[Path, str], list[str]], str]] = [
    (
        "--config twice",
        lambda t, d: [
            "movies",
            "--data-dir",
            d,
            *FAST,
            "--config",
            _file(t, "{}", "a.json"),
            "--config",
            _file(t, '{"dim": 5}', "b.json"),
        ],
        "argument --config: given twice",
    ),
    (
        "a key twice in a config file",
        lambda t, d: [
            "movies",
            "--data-dir",
            d,
            *FAST,
            "--config",
            _file(t, '{"movies": {"like_threshold": 3.5, "like_threshold": 4.5}}'),
        ],
        "the key 'like_threshold' appears twice in one object",
    ),
    (
        "a key twice in a settings-only file",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--config", _file(t, '{"metric": "dot", "metric": "cosine"}')],
        "the key 'metric' appears twice",
    ),
    (
        "a section as a string, read by movies",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--config", _file(t, '{"study": "vision"}')],
        "section 'study' of",
    ),
    (
        "a section as a string, read by vision probe",
        lambda t, d: ["vision", "probe", "--data-dir", d, "--config", _file(t, '{"study": "vision"}')],
        "section 'study' of",
    ),
    (
        "a section as a string, read by run",
        lambda t, d: ["run", "--profile", "smoke", "--data-dir", d, "--config", _file(t, '{"study": "vision"}')],
        "section 'study' of",
    ),
    (
        "an unread section as a list, read by movies",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--config", _file(t, '{"probe": [1]}')],
        "section 'probe' of",
    ),
    (
        "steps that are not a list",
        lambda t, d: ["run", "--profile", "smoke", "--data-dir", d, "--config", _file(t, '{"steps": "movies"}')],
        "section 'steps' of",
    ),
    (
        "iterations no run could finish",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--final-iterations", "10000000"],
        "--final-iterations 10000000: input should be less than or equal to 100000",
    ),
    (
        "epochs in a config file",
        lambda t, d: [
            "run",
            "--profile",
            "smoke",
            "--data-dir",
            d,
            "--config",
            _file(t, '{"finetune": {"epochs": 100000}}'),
        ],
        "finetune.epochs = 100000: input should be less than or equal to 1000",
    ),
    (
        "a batch larger than the training set",
        lambda t, d: ["vision", "finetune", "--data-dir", d, "--batch-size", "60000"],
        "--batch-size 60000: input should be less than or equal to 50000",
    ),
    (
        "an L2 strength of 1e300",
        lambda t, d: ["vision", "probe", "--data-dir", d, "--l2-grid", "0.1,1e300"],
        "input should be less than or equal to 1000000000",
    ),
    (
        "a learning rate of 1e300 in the sweep",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--lrs", "adam=1e300"],
        "input should be less than or equal to 10000",
    ),
    (
        "a setting the chosen steps never read",
        lambda t, d: ["run", "--profile", "smoke", "--data-dir", d, "--steps", "movies", "--epochs", "5"],
        (
            "--epochs is a setting of the finetune step, which --steps movies does not run; drop --epochs, or add"
            " finetune to --steps"
        ),
    ),
    (
        "a vision setting with the movie step alone",
        lambda t, d: ["run", "--profile", "smoke", "--data-dir", d, "--steps", "movies", "--backbone", "resnet18"],
        "--backbone is a setting of the probe and finetune steps",
    ),
    (
        "a movie setting with the vision steps alone",
        lambda t, d: ["run", "--profile", "smoke", "--data-dir", d, "--steps", "probe", "--dim", "8"],
        "--dim is a setting of the movies step",
    ),
    (
        "--top twice",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--top", "2", "--top", "3"],
        "argument --top: given twice (--top 2, then --top 3); give it once",
    ),
    (
        "--dim twice",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--dim", "5"],
        "argument --dim: given twice (--dim 4, then --dim 5)",
    ),
    (
        "--map after --no-map",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--map"],
        "argument --map/--no-map: given twice",
    ),
    ("--steps twice", lambda t, d: ["run", "--steps", "movies", "--steps", "probe"], "argument --steps: given twice"),
    (
        "recommend --top twice",
        lambda t, d: ["recommend", "Toy Story", "--run", str(t), "--top", "2", "--top", "3"],
        "argument --top: given twice",
    ),
    (
        "JSON nested beyond the parser's recursion",
        lambda t, d: ["movies", "--data-dir", d, *FAST, "--config", _file(t, "[" * 100_000 + "]" * 100_000)],
        "nested too deeply",
    ),
    (
        "a nested object nested beyond it",
        lambda t, d: [
            "run",
            "--profile",
            "smoke",
            "--config",
            _file(t, '{"movies": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001),
        ],
        "nested too deeply",
    ),
]


@pytest.mark.parametrize("name, argv, says", SILENT_ROWS, ids=[r[0] for r in SILENT_ROWS])
def test_nothing_is_accepted_silently(movielens_root, tmp_path, capsys, name, argv, says):
    out = tmp_path / "out"
    args = argv(tmp_path, str(movielens_root))
    err = _expect_one_error(main(args if args[0] == "recommend" else [*args, "--out", str(out)]), capsys, says)
    assert "Traceback" not in err
    assert not out.exists() or not (out / "metrics.json").exists()  # nothing was run, nothing saved as if it had


def test_a_resume_on_other_data_is_refused_and_on_the_same_data_elsewhere_goes_on(
    movielens_root, tmp_path, capsys, monkeypatch
):
    """The run records its files' sha256 in 2A; a resume compares them before it touches the folder."""
    from embedlab.movies import pipeline

    real = pipeline.step_2b_fit
    monkeypatch.setattr(pipeline, "step_2b_fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    out = tmp_path / "run"
    assert main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data"]) == 130
    monkeypatch.setattr(pipeline, "step_2b_fit", real)
    recorded = json.loads((out / "metrics.json").read_text())["movies_data"]["files_sha256"]
    assert set(recorded) == {"movies.csv", "ratings.csv"}
    other, same = tmp_path / "other", tmp_path / "same"
    shutil.copytree(movielens_root, other)
    shutil.copytree(movielens_root, same)
    _append(_ratings(other), "60,300,4.0,1\n")  # one more like: M changes
    config_before = (out / "config.json").read_text()
    capsys.readouterr()
    _expect_one_error(
        main(["movies", "--resume", str(out), "--data-dir", str(other), "--allow-modified-data"]),
        capsys,
        f"{out} was computed on other data: {other / 'ml-latest-small' / 'ratings.csv'} differ(s) from the file(s) it"
        " read",
    )
    assert (out / "config.json").read_text() == config_before  # data_dir not rewritten
    assert main(["movies", "--resume", str(out), "--data-dir", str(same), "--allow-modified-data"]) == 0
    assert json.loads((out / "config.json").read_text())["movies"]["data_dir"] == str(same)
    assert json.loads((out / "metrics.json").read_text())["movies_data"]["files_sha256"] == recorded


def test_a_study_resumed_on_other_movie_data_is_refused(movielens_root, tmp_path, capsys, monkeypatch):
    from embedlab.movies import pipeline

    monkeypatch.setattr(pipeline, "step_2b_fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--profile",
                "smoke",
                "--steps",
                "movies",
                "--data-dir",
                str(movielens_root),
                "--offline",
                "--allow-modified-data",
                "--dim",
                "4",
                "--out",
                str(out),
            ]
        )
        == 130
    )
    other = tmp_path / "other"
    shutil.copytree(movielens_root, other)
    _append(_ratings(other), "60,300,4.0,1\n")
    capsys.readouterr()
    _expect_one_error(
        main(["run", "--resume", str(out), "--data-dir", str(other)]), capsys, "was computed on other data"
    )
    assert json.loads((out / "config.json").read_text())["movies"]["data_dir"] == str(movielens_root)


def _blank_cell(folder: Path, row: int, column: str) -> None:
    import pandas as pd

    movies = pd.read_csv(folder / "ml-latest-small" / "movies.csv", dtype=str, keep_default_na=False)
    movies.loc[row, column] = ""
    movies.to_csv(folder / "ml-latest-small" / "movies.csv", index=False)


def _drop_movie(folder: Path, row: int) -> None:
    import pandas as pd

    movies = pd.read_csv(folder / "ml-latest-small" / "movies.csv")
    movies.drop(index=row).to_csv(folder / "ml-latest-small" / "movies.csv", index=False)


# (id, how to break movies.csv, the warning, the movie's row in catalogue.csv/items.csv as the run keeps it)
KEPT_ROWS: list[tuple[str, Callable[[Path], None], str, tuple[int, str, str]]] = [
    (
        "an empty title",
        lambda r: _blank_cell(r, 3, "title"),
        "1 movie(s) with an empty title on data line(s) 4; kept, shown as '(no title: movieId 40)'",
        (40, "(no title: movieId 40)", "Action|Sci-Fi|Thriller"),
    ),
    (
        "a title of spaces",
        lambda r: _blank_cell(r, 3, "title") or _replace_in(r, ",,Action", ",   ,Action"),
        "with an empty title on data line(s) 4",
        (40, "(no title: movieId 40)", "Action|Sci-Fi|Thriller"),
    ),
    (
        "no genres",
        lambda r: _blank_cell(r, 3, "genres"),
        "1 movie(s) with no genres on data line(s) 4; kept, shown as '(no genres listed)'",
        (40, "Matrix, The (1999)", "(no genres listed)"),
    ),
    (
        "a liked movie missing from movies.csv",
        lambda r: _drop_movie(r, 3),
        "1 liked movie(s) are not in movies.csv (movieId 40); kept, titled as '(no title: movieId 40)'",
        (40, "(no title: movieId 40)", "(no genres listed)"),
    ),
]


def _replace_in(folder: Path, old: str, new: str) -> None:
    path = folder / "ml-latest-small" / "movies.csv"
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize("name, breaks, warns, kept", KEPT_ROWS, ids=[r[0] for r in KEPT_ROWS])
def test_rows_used_in_part_are_kept_visibly_with_a_warning(movielens_root, tmp_path, caplog, name, breaks, warns, kept):
    import pandas as pd

    breaks(movielens_root)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        assert (
            main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data"]) == 0
        )
    assert [r.getMessage() for r in caplog.records if warns in r.getMessage()], caplog.text
    movie_id, title, genres = kept
    items = pd.read_csv(out / "artefacts" / "items.csv").set_index("movieId")
    assert (items.at[movie_id, "title"], items.at[movie_id, "genres"]) == (title, genres)
    assert warns in (out / "run.log").read_text()
    assert title in (out / "report.html").read_text() or title not in set(
        pd.read_csv(out / "tables" / "colike_top_pairs.csv").stack()
    )


def test_sigterm_is_handled_as_ctrl_c(movielens_root, tmp_path, capsys, monkeypatch):
    import signal

    from embedlab.movies import pipeline

    monkeypatch.setattr(pipeline, "step_2b_fit", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "o"
    assert main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--allow-modified-data"]) == 143
    err = capsys.readouterr().err
    assert err.strip() == (
        "embedlab: interrupted: terminated (SIGTERM); finished steps are saved in the run folder; continue with: "
        f"embedlab movies --resume {out}"
    ), err
    assert json.loads((out / "metrics.json").read_text())["movies_run"]["status"].startswith(
        "interrupted: terminated (SIGTERM)"
    )
    assert (out / "tables" / "query_likes.csv").is_file()  # 2A's tables are kept
    assert (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        or not callable(signal.getsignal(signal.SIGTERM))
        or signal.getsignal(signal.SIGTERM).__module__ != "embedlab.cli"
    )  # the handler lives only while a command runs


def test_sigterm_to_a_running_process_leaves_a_resumable_run(movielens_root, tmp_path):
    """The real signal, from outside, to `python -m embedlab` in the middle of its sweep."""
    import signal
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedlab",
            "movies",
            "--data-dir",
            str(movielens_root),
            "--out",
            str(out),
            "--profile",
            "smoke",
            "--offline",
            "--allow-modified-data",
            "--iterations",
            "100000",
            "--optimizers",
            "sgd",
            "--lrs",
            "sgd=1e-6",
            "--no-map",
            "--dim-sweep",
            "",
            "--dim",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while (
        "movies_data" not in _text_or_empty(out / "metrics.json")
        and time.monotonic() < deadline
        and proc.poll() is None
    ):
        time.sleep(0.2)  # 2A has finished: the signal arrives in the sweep (100,000 steps: minutes)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("embedlab: interrupted: terminated (SIGTERM)"), err
    assert "Traceback" not in err
    assert json.loads((out / "metrics.json").read_text())["movies_run"]["status"].startswith("interrupted")
    assert "movies_data" in json.loads((out / "metrics.json").read_text())  # what finished is kept


def _text_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_bidi_controls_in_titles_are_neutralised_in_the_report(hostile_run):
    from conftest import NON_LATIN_TITLES

    reversed_title = next(t for t in NON_LATIN_TITLES if "\u202e" in t)
    for name in ("report.md", "report.html"):
        text = (hostile_run / name).read_text(encoding="utf-8")
        assert "\u202e" not in text, name
    html = (hostile_run / "report.html").read_text(encoding="utf-8")
    payload = json.loads(html.split('id="explorer-data">', 1)[1].split("</script>", 1)[0])
    assert reversed_title.replace("\u202e", "") in payload["titles"] and not any(
        "\u202e" in t for t in payload["titles"]
    )


def test_non_latin_titles_from_the_command_line(hostile_run, capsys):
    """The shared table's non-Latin cases, through `embedlab recommend` on a run whose catalogue holds them."""
    from conftest import NON_LATIN

    from embedlab.text import without_bidi

    for case in NON_LATIN["cases"]:
        status = main(["recommend", case["query"], "--run", str(hostile_run), "--top", "3", "--min-likes", "0"])
        out, err = capsys.readouterr()
        if "found" in case:
            assert status == 0 and out.startswith(f"Top 3 for {without_bidi(case['found'])} ("), (
                ascii(case["query"]),
                out,
                err,
            )
        else:
            assert status == 2 and err.startswith(f"embedlab: error: no movie titled {case['query']!r}"), err


def test_non_latin_titles_in_the_explorer(hostile_run, tmp_path):
    """The same cases typed into the report's explorer: the same film as TitleIndex finds over the page's own titles."""
    import pandas as pd
    from browser_check import explorer_lookups
    from conftest import NON_LATIN

    from embedlab.movies.titles import TitleIndex
    from embedlab.report.explorer import explorer_data
    from embedlab.runs import RunDir
    from embedlab.store import Store
    from embedlab.text import without_bidi

    page = explorer_data(Store(RunDir(hostile_run)))
    titles = page["titles"] + page["others"]["titles"]  # the films the page holds, then every other one
    index = TitleIndex(
        pd.DataFrame({"movieId": range(len(titles)), "title": titles}), page["likes"] + page["others"]["likes"]
    )
    queries = [c["query"] for c in NON_LATIN["cases"]]
    answers = explorer_lookups(hostile_run / "report.html", tmp_path / "b", queries)
    for case in NON_LATIN["cases"]:
        q = case["query"]
        assert answers[q]["matches"] == [titles[i] for i in index.candidates(q)[1]], ascii(q)
        if "found" in case:
            assert answers[q]["matches"] == [without_bidi(case["found"])] and answers[q]["selected"] == without_bidi(
                case["found"]
            ), ascii(q)
        else:
            assert answers[q]["matches"] == [], ascii(q)


# ---- a property over whole config files as text: duplicate keys, nesting, wrong types, huge numbers ----

SETTING_NAMES = sorted(
    f.name for f in dataclasses.fields(__import__("embedlab.config", fromlist=["MoviesConfig"]).MoviesConfig)
)


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    """A config file's text as a person or a tool might write it: sections and keys (some repeated, some unknown),
    values of any JSON type (huge and non-finite numbers too), nested to any depth."""
    key = st.sampled_from([*SETTING_NAMES, "resolved", "x"])
    value = st.one_of(
        JSON_VALUES, st.integers(-(10**30), 10**30), st.floats(1e6, 1e308), st.sampled_from([10**9, 10**6, 1e300])
    )
    pairs = draw(st.lists(st.tuples(key, value), max_size=4))
    if draw(st.booleans()) and pairs:  # a key given twice, with another value
        pairs.append((pairs[0][0], draw(value)))
    inner = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    depth = draw(st.sampled_from([0, 0, 1, 5, 3000]))
    inner = '{"a": ' * depth + inner + "}" * depth
    section = draw(st.sampled_from(["movies", "study", "probe", "steps", None]))
    return inner if section is None else "{" + json.dumps(section) + ": " + inner + "}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=config_texts())
def test_any_config_text_is_a_valid_config_or_one_error_line(tmp_path, capsys, monkeypatch, text):
    from embedlab import commands

    seen = []
    monkeypatch.setattr(commands, "on_ranks", lambda backend, folder, body: seen.append(True) or 0)
    path = tmp_path / "config.json"
    path.write_text(text)
    status = main(["movies", "--profile", "smoke", "--config", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status == 0:
        assert seen and err == ""
        parsed = json.loads(text)  # a valid config: JSON the standard parser reads the same way, without a key twice
        assert _no_key_twice(text)
        assert isinstance(parsed, dict)
    else:
        assert status == 2 and len([line for line in err.splitlines() if line.startswith("embedlab: error:")]) == 1, err


def _no_key_twice(text: str) -> bool:
    """Whether no JSON object in ``text`` names a key twice (checked here with the standard parser's own hook)."""
    twice = []

    def hook(pairs: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in pairs]
        twice.extend(k for k in set(keys) if keys.count(k) > 1)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return not twice


def test_missing_data_names_every_missing_dataset_at_once_and_creates_nothing(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    out = tmp_path / "run"
    err = _expect_one_error(
        main(["run", "--data-dir", str(tmp_path / "data"), "--offline", "--out", str(out)]),
        capsys,
        "CIFAR-10 not found",
    )
    assert "MovieLens ml-latest-small not found" in err
    assert not out.exists()
