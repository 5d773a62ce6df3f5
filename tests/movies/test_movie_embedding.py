"""MovieEmbedding, the object a notebook keeps: fitted, listed, saved and loaded back equal; a file it did not write is
refused with one error and never unpickled; a finished run gives the same lists as `embedlab recommend`."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import embedlab
from embedlab.errors import InputError
from embedlab.movies.saved import MovieEmbedding


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[MovieEmbedding, object]:
    from conftest import write_movielens

    root = tmp_path_factory.mktemp("data")
    write_movielens(root / "ml-latest-small")
    ml = embedlab.movielens(root)
    return MovieEmbedding.fit(ml.colikes(), ml.movies, dim=6, iterations=60, seed=1), ml


def test_fit_names_every_row_and_lists_like_the_function(fitted):
    emb, ml = fitted
    co = ml.colikes()
    assert emb.v.shape == (co.n_movies, 6) and emb.items["movieId"].tolist() == co.movie_ids.tolist()
    assert emb.items["likes"].tolist() == co.like_counts.tolist()
    title = emb.items["title"].iat[int(np.argmax(emb.items["likes"]))]
    listed = emb.similar(title, k=3, min_likes=0)
    assert list(listed.columns) == ["rank", "title", "genres", "similarity", "likes"] and len(listed) == 3
    assert title not in listed["title"].tolist()
    run = embedlab.fit_embeddings(co, dim=6, iterations=60, seed=1)
    assert torch.equal(run.v, emb.v)  # the same fit
    assert embedlab.recommend(title, run, co, ml.movies, k=3, min_likes=0).equals(listed)  # a thin call of it


def test_a_movie_id_answers_as_its_title(fitted):
    emb, _ = fitted
    row = int(np.argmax(emb.items["likes"]))
    by_id = emb.similar(int(emb.items["movieId"].iat[row]), k=4, min_likes=0)
    assert by_id.equals(emb.similar(emb.items["title"].iat[row], k=4, min_likes=0))


def test_save_and_load_round_trip_exactly(fitted, tmp_path):
    emb, _ = fitted
    path = emb.save(tmp_path / "emb.npz")
    back = MovieEmbedding.load(path)
    assert torch.equal(back.v, emb.v) and back.v.dtype == emb.v.dtype
    pd.testing.assert_frame_equal(back.items, emb.items[["movieId", "title", "genres", "likes"]])
    pd.testing.assert_frame_equal(back.catalogue, emb.catalogue[["movieId", "title"]])
    assert (back.metric, back.min_likes) == (emb.metric, emb.min_likes)
    assert emb.save(path) == path  # its own file may be replaced


def test_an_edited_foreign_or_pickled_file_is_refused(fitted, tmp_path):
    emb, _ = fitted
    path = emb.save(tmp_path / "emb.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["v"] = arrays["v"] + 1  # edited after saving
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(InputError, match="was changed after MovieEmbedding.save wrote it"):
        MovieEmbedding.load(tmp_path / "edited.npz")
    np.savez(tmp_path / "other.npz", v=np.zeros((3, 2)))
    with pytest.raises(InputError, match="not a file MovieEmbedding.save wrote"):
        MovieEmbedding.load(tmp_path / "other.npz")

    class Boom:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))

    np.save(tmp_path / "pickled.npy", np.array([Boom()], dtype=object), allow_pickle=True)
    (tmp_path / "pickled.npz").write_bytes(pickle.dumps(Boom()))
    for name in ("pickled.npy", "pickled.npz"):
        with pytest.raises(InputError, match="not a file MovieEmbedding.save wrote"):
            MovieEmbedding.load(tmp_path / name)
    assert not (tmp_path / "PWNED").exists() and not __import__("pathlib").Path("PWNED").exists()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not a file MovieEmbedding.save wrote"):
        emb.save(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"  # never overwritten


def test_from_run_answers_as_embedlab_recommend(tmp_path, capsys):
    from conftest import FAST_MOVIES, write_movielens

    from embedlab.cli import main

    write_movielens(tmp_path / "data" / "ml-latest-small")
    out = tmp_path / "run"
    argv = ["movies", "--data-dir", str(tmp_path / "data"), "--out", str(out), *FAST_MOVIES, "--allow-modified-data"]
    assert main(argv) == 0
    emb = MovieEmbedding.from_run(out)
    title = emb.items["title"].iat[int(np.argmax(emb.items["likes"]))]
    capsys.readouterr()
    assert main(["recommend", title, "--run", str(out), "--top", "3", "--min-likes", "0"]) == 0
    printed = capsys.readouterr().out
    assert all(t in printed for t in emb.similar(title, k=3, min_likes=0)["title"])
    back = MovieEmbedding.load(emb.save(tmp_path / "emb.npz"))
    assert back.similar(title, k=3, min_likes=0).equals(emb.similar(title, k=3, min_likes=0))
