"""Shared fixtures: tiny synthetic MovieLens folders written inside the tests, and the real data when present."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedlab.vision import cifar10

os.environ.setdefault("MPLBACKEND", "Agg")  # as the command line does: the tests draw into files, never windows

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TITLES = [
    ("Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy"),
    ("Apollo 13 (1995)", "Adventure|Drama|IMAX"),
    ("Home Alone (1990)", "Children|Comedy"),
    ("Matrix, The (1999)", "Action|Sci-Fi|Thriller"),
    ("Hamlet (1996)", "Crime|Drama|Romance"),
    ("Hamlet (1948)", "Drama"),
    ("Seven (a.k.a. Se7en) (1995)", "Mystery|Thriller"),
    ("Toy Story 2 (1999)", "Adventure|Animation|Children|Comedy|Fantasy"),
]


def write_movielens(folder: Path, n_users: int = 60, n_movies: int = 30, seed: int = 0) -> Path:
    """A small ml-latest-small look-alike with two taste groups, so embeddings have structure."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    titles = TITLES + [
        (f"Film {i} ({1980 + i})", "Drama" if i % 2 else "Comedy") for i in range(n_movies - len(TITLES))
    ]
    movies = pd.DataFrame(
        {"movieId": np.arange(1, n_movies + 1) * 10, "title": [t for t, _ in titles], "genres": [g for _, g in titles]}
    )
    rows = []
    for u in range(1, n_users + 1):
        group = u % 2
        for j, mid in enumerate(movies["movieId"]):
            p = 0.6 if (j % 2 == group) else 0.15
            if rng.random() < p:
                rating = float(rng.choice([3.0, 3.5, 4.0, 4.5, 5.0], p=[0.1, 0.1, 0.3, 0.2, 0.3]))
                rows.append((u, int(mid), rating, 1_000_000 + len(rows)))
    ratings = pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])
    movies.to_csv(folder / "movies.csv", index=False)
    ratings.to_csv(folder / "ratings.csv", index=False)
    return folder


#: Titles a modified movies.csv may hold: none may become markup in report.md/report.html or stop the explorer.
#: Each script-shaped one would set ``document.title`` to "pwned" if it ever ran.
HOSTILE_TITLES = [
    "<img src=x onerror=\"document.title='pwned'\"> (2001)",
    "<script>document.title='pwned'</script> (2002)",
    "Comment <!--<script> (2003)",
    "End </script><script>document.title='pwned'</script> (2004)",
    "Ticks `<b>bold</b>` and ``x`` (2005)",
    "Pipe | star * under_score [link](javascript:document.title='pwned') # (2006)",
    "Entities &lt;script&gt; &amp; &#60;b&#62; (2007)",
    "Separators \u2028 and \u2029 and ]]> (2008)",
    "<svg onload=\"document.title='pwned'\"> (2009)",
]


#: Titles in other scripts, emoji and invisible characters (tests/title_cases.json, "non_latin"): each must be found as
#: typed, by TitleIndex, the command line and the explorer alike.
NON_LATIN = json.loads((Path(__file__).parent / "title_cases.json").read_text(encoding="utf-8"))["non_latin"]
NON_LATIN_TITLES: list[str] = NON_LATIN["titles"]


def write_hostile_movielens(folder: Path) -> Path:
    """``write_movielens`` with the films after the first eight renamed to the hostile titles, then the non-Latin ones
    (same likes, so all have vectors)."""
    write_movielens(folder)
    movies = pd.read_csv(folder / "movies.csv")
    renamed = HOSTILE_TITLES + NON_LATIN_TITLES
    movies.loc[len(TITLES) : len(TITLES) + len(renamed) - 1, "title"] = renamed
    movies.to_csv(folder / "movies.csv", index=False)
    return folder


@pytest.fixture
def movielens_root(tmp_path: Path) -> Path:
    """A data directory holding a synthetic ml-latest-small/."""
    write_movielens(tmp_path / "data" / "ml-latest-small")
    return tmp_path / "data"


@pytest.fixture
def real_data() -> Path:
    """The shared offline data, or a skip saying why."""
    if not (SHARED_DATA / "ml-latest-small" / "ratings.csv").is_file():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def real_cifar() -> Path:
    """The shared offline CIFAR-10 batches, or a skip saying why."""
    folder = SHARED_DATA / "cifar-10-batches-py"
    if not (folder / "test_batch").is_file():
        pytest.skip(f"real CIFAR-10 not present at {folder}")
    return folder


# ---- synthetic CIFAR-10 batches, in the official python format ----


def write_batch(path: Path, n: int, seed: int) -> None:
    """A batch with class-dependent colours so that even a random network separates some classes."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).tolist()
    base = np.array(labels)[:, None] * 24 + 10
    data = np.clip(base + rng.integers(-10, 10, (n, 3072)), 0, 255).astype(np.uint8)
    with open(path, "wb") as f:
        pickle.dump(
            {"batch_label": "synthetic", "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]},
            f,
            protocol=2,
        )


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/cifar-10-batches-py with 5 x 60 training and 100 test images; the md5 table is pointed at them."""
    folder = tmp_path / "data" / cifar10.DIRNAME
    folder.mkdir(parents=True)
    for i, name in enumerate([*cifar10.TRAIN_FILES, "test_batch"]):
        write_batch(folder / name, 100 if name == "test_batch" else 60, seed=i)
        monkeypatch.setitem(cifar10.MD5, name, cifar10.md5_bytes((folder / name).read_bytes()))
    return tmp_path / "data"


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _probe_result(
    test_accuracy: float = 0.85, per_class: dict | None = None, extract_train_seconds: float | None = 600.0
):
    from embedlab.results import Evaluation, FeatureSummary, ProbeResult, ProbeScores

    features = FeatureSummary(
        backbone="efficientnet_lite0",
        weights="imagenet",
        weights_digest="abc",
        resolution=96,
        device="cpu",
        feature_dim=1280,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        train_images=900,
        val_images=100,
        test_images=1000,
        features_cached=False,
        extract_train_seconds=extract_train_seconds,
        extract_train_images_per_second=80.0,
        extract_test_seconds=12.0,
        extract_test_images_per_second=85.0,
    )
    ev = Evaluation(test_accuracy, per_class or {c: test_accuracy for c in CIFAR_CLASSES})
    return ProbeResult(
        features,
        ProbeScores(
            l2=1e-3,
            train_accuracy=0.9,
            val_accuracy=test_accuracy,
            evaluation=ev,
            fit_seconds=10.0,
            trainable_parameters=12810,
            probe_iterations=40,
        ),
        total_seconds=700.0,
    )


def _finetune_result(test_accuracy: float = 0.94, per_class: dict | None = None):
    from embedlab.results import Evaluation, FinetuneResult

    ev = Evaluation(test_accuracy, per_class or {c: test_accuracy for c in CIFAR_CLASSES})
    return FinetuneResult(
        backbone="efficientnet_lite0",
        weights="imagenet",
        weights_digest="abc",
        resolution=96,
        device="cpu",
        train_scope="all",
        frozen_stages=[],
        trainable_parameters=3_384_010,
        total_parameters=3_400_000,
        train_images=900,
        val_images=100,
        test_images=1000,
        epochs=2,
        start_size=None,
        ema=None,
        head_init="random",
        train_pixels=1,
        steps=10,
        val_accuracy=test_accuracy,
        best_epoch_val_accuracy=test_accuracy,
        evaluation=ev,
        tta_flip=False,
        test_accuracy_one_view=test_accuracy,
        train_seconds=2700.0,
        train_images_per_second=50.0,
        val_seconds=60.0,
        test_images_per_second=200.0,
        expected_seconds=2800.0,
        bare_train_images_per_second=50.0,
        processes=1,
        batch_per_process=64,
        total_seconds_this_session=2800.0,
    )


@pytest.fixture
def make_result():
    """Complete, typed vision results for tests of what reads them: ``make_result.probe(0.85)``,
    ``make_result.finetune(0.94)``."""
    import types

    return types.SimpleNamespace(probe=_probe_result, finetune=_finetune_result)


def with_flags(argv: list[str], *extra: str) -> list[str]:
    """``argv`` with the flags of ``extra`` given instead of its own (a flag may be given once): ``with_flags(FAST,
    "--dim",
    "5")`` is FAST with --dim 5. A flag's value is the word after it unless that word is another flag."""

    def parse(words: list[str] | tuple[str, ...]) -> list[list[str]]:
        groups: list[list[str]] = []
        for w in words:
            if w.startswith("--") or not groups:
                groups.append([w])
            else:
                groups[-1].append(w)
        return groups

    def name(flag: str) -> str:  # --map and --no-map are one setting
        return flag.removeprefix("--no-") if flag.startswith("--no-") else flag.removeprefix("--")

    new = parse(extra)
    replaced = {name(g[0]) for g in new}
    return [w for g in parse(argv) if name(g[0]) not in replaced for w in g] + [w for g in new for w in g]


#: The movie study in seconds on the synthetic MovieLens folders: what the bad-input and tampering tests run.
FAST_MOVIES = [
    "--profile",
    "smoke",
    "--dim",
    "4",
    "--iterations",
    "20",
    "--min-likes",
    "2",
    "--offline",
    "--no-map",
    "--dim-sweep",
    "",
]


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A copy of a finished run folder, to break without touching the original."""
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def expect_one_error(status: int, capsys: pytest.CaptureFixture[str], says: str) -> str:
    """Exit status 2, exactly one ``embedlab: error:`` line saying ``says``, no traceback; returns stderr."""
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("embedlab: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert says in err, err
    return err
