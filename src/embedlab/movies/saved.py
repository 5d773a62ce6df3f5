"""Movie vectors kept as an object, as implicit and scikit-learn keep a fitted model: fitted here (``fit``), read from
a finished run (``from_run``) or from a file of its own (``save`` / ``load``, an npz of arrays and JSON text that
round-trips exactly and is never unpickled); ``similar`` lists the closest movies by title or id. ``embedlab
recommend`` and ``embedlab.recommend`` are thin calls of it."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedlab.config import MoviesConfig
from embedlab.errors import InputError, MissingFileError
from embedlab.files import npz_bytes, write_atomic
from embedlab.movies.cooccurrence import CoLikes
from embedlab.movies.movielens import split_title, untitled
from embedlab.movies.recommend import eligible_items, similar_items
from embedlab.movies.tables import top_table
from embedlab.movies.titles import TitleIndex, TitleMatch, nobody_liked
from embedlab.store import Store


@dataclass
class MovieEmbedding:
    """One vector per movie (``v``, in the rows of ``items``: movieId, title, genres, likes), the similarity ``metric``
    and the ``min_likes`` a recommended movie needs, and the release's ``catalogue``.

    >>> emb = MovieEmbedding.fit(ml.colikes(), ml.movies, dim=32, iterations=300)  # doctest: +SKIP
    >>> emb.similar("Toy Story", k=3)["title"].tolist()  # doctest: +SKIP
    ['Toy Story 2 (1999)', ...]
    >>> emb.save("toy.npz"); MovieEmbedding.load("toy.npz").similar(1, k=3)  # doctest: +SKIP
    """

    v: torch.Tensor
    items: pd.DataFrame
    metric: str
    min_likes: int

    catalogue: pd.DataFrame  # every movie of the release (movieId, title): tells an unknown title from one nobody liked

    @classmethod
    def fit(
        cls,
        co: CoLikes,
        movies: pd.DataFrame,
        dim: int = 100,
        optimizer: str = "adam",
        lr: float = 0.3,
        iterations: int = 500,
        seed: int = 0,
    ) -> MovieEmbedding:
        """Minimise the sum over i != j of (v_i . v_j - X_ij)^2 for the co-likes ``co`` (``embedlab.fit_embeddings``);
        ``movies`` (movieId, title, genres) names the rows. Recommends with cosine among movies of >= 10 likes, as the
        study does; a fit that diverged is an ``InputError`` that says to lower ``lr``."""
        from embedlab.api import fit_embeddings

        run = fit_embeddings(co, dim=dim, optimizer=optimizer, lr=lr, iterations=iterations, seed=seed)
        if run.diverged or not bool(torch.isfinite(run.v).all()):
            raise InputError(f"the fit diverged ({optimizer} at lr={lr:g}); fit again with a lower lr")
        return cls.of(run.v, co, movies)

    @classmethod
    def of(cls, v: torch.Tensor, co: CoLikes, movies: pd.DataFrame) -> MovieEmbedding:
        """The vectors ``v`` of the co-likes ``co`` (one row per movie of ``co.movie_ids``), named by ``movies``;
        cosine among movies of >= 10 likes, as the study recommends."""
        named = movies.set_index("movieId").reindex(co.movie_ids)
        genres = named["genres"] if "genres" in named else pd.Series("", index=named.index)
        items = pd.DataFrame(
            {
                "movieId": co.movie_ids.astype(np.int64),
                "title": named["title"].fillna("").astype(str).to_numpy(),
                "genres": genres.fillna("").astype(str).to_numpy(),
                "likes": co.like_counts.astype(np.int64),
            }
        )
        catalogue = pd.DataFrame({"movieId": movies["movieId"].astype(np.int64), "title": movies["title"].astype(str)})
        defaults = MoviesConfig()
        return cls(v.detach().float().clone(), items, defaults.metric, defaults.min_likes, catalogue)

    @classmethod
    def from_run(cls, path: str | Path) -> MovieEmbedding:
        """The embedding of a finished movie study (``embedlab run`` or ``embedlab movies``) in the folder ``path``,
        with its metric and min_likes; nothing in the folder is changed."""
        return cls.from_store(Store.open(Path(path)))

    def save(self, path: str | Path) -> Path:
        """One file (``.npz``: the vectors, and the tables and settings as JSON text, with their sha256) that ``load``
        reads back equal, written under a temporary name and renamed. An existing file is replaced only when it is
        one ``save`` wrote."""
        path = Path(path)
        if path.exists() or path.is_symlink():
            try:
                MovieEmbedding.load(path)
            except InputError:
                raise InputError(
                    f"{path} exists and is not a file MovieEmbedding.save wrote; choose another path"
                ) from None
        arrays = _arrays_of(self)
        return write_atomic(path, npz_bytes(**arrays, sha256=np.array(_digest(arrays))))

    @classmethod
    def load(cls, path: str | Path) -> MovieEmbedding:
        """What ``save`` wrote to ``path``, equal to what was saved. Any other file (another npz, a pickle, one
        edited after it was saved) is an ``InputError`` that names it; nothing in it is ever unpickled."""
        path = Path(path)
        foreign = f"{path} is not a file MovieEmbedding.save wrote"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise MissingFileError(f"{path} does not exist") from None
        except (OSError, ValueError, KeyError, EOFError, AttributeError, TypeError, zipfile.BadZipFile):
            raise InputError(f"{foreign} (not an npz of plain arrays)") from None
        digest = arrays.pop("sha256", None)
        if set(arrays) != set(FILE_ARRAYS) or str(arrays["format"]) != FILE_FORMAT:
            raise InputError(f"{foreign} (its arrays are {sorted(arrays)})")
        if digest is None or str(digest) != _digest(arrays):
            raise InputError(
                f"{path} was changed after MovieEmbedding.save wrote it (its sha256 differs); save it again"
            )
        settings = json.loads(str(arrays["settings"]))
        return cls(
            torch.from_numpy(arrays["v"].astype(np.float32)),
            _frame(str(arrays["items"]), {"movieId": np.int64, "title": str, "genres": str, "likes": np.int64}),
            settings["metric"],
            settings["min_likes"],
            _frame(str(arrays["catalogue"]), {"movieId": np.int64, "title": str}),
        )

    @classmethod
    def from_store(cls, store: Store) -> MovieEmbedding:
        """The run's embeddings, items and settings, read through ``store`` (regular files of the folder's own, the
        settings as strictly as ``--resume`` and ``report`` read them); every missing or damaged file is an error that
        names it."""
        run_path = store.path
        emb = store.artefact("embeddings.npz")
        if emb is None:
            raise MissingFileError(
                f"artefacts/embeddings.npz is missing (or not a file) in {run_path}: its movie study did not finish its"
                " fit"
            )
        try:
            with np.load(emb) as z:
                v = torch.from_numpy(np.asarray(z["v"], dtype=np.float32))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise SavedRunError(
                f"{emb} is damaged or incomplete ({type(exc).__name__}: {exc}); run `embedlab movies` again"
            ) from None
        cfg = store.typed_config(MoviesConfig, "movies")
        items = _read_table(store, "items.csv", {"movieId": "int64", "title": "str", "genres": "str", "likes": "int64"})
        if v.dim() != 2 or v.shape[1] == 0:
            raise SavedRunError(
                f"{emb} holds vectors of shape {tuple(v.shape)}, not one vector of at least one number per movie; it "
                "was damaged or edited: run `embedlab movies` again"
            )
        if not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).any(dim=1).sum())
            raise SavedRunError(
                f"{emb} holds vectors that are not finite numbers (NaN or infinity in {bad:,} of them); it was "
                "damaged or edited: run `embedlab movies` again"
            )
        if len(items) != v.shape[0]:
            raise SavedRunError(
                f"artefacts/items.csv has {len(items)} rows and {emb} {tuple(v.shape)} vectors: they belong to "
                "different runs"
            )
        catalogue = _read_table(store, "catalogue.csv", {"movieId": "int64", "title": "str"})
        unlisted = ~np.isin(items["movieId"].to_numpy(), catalogue["movieId"].to_numpy())
        untitled_ids = [untitled(int(m)) for m in items["movieId"].to_numpy()[unlisted]]
        # a liked movie missing from movies.csv is kept under its "(no title: movieId N)" title; any other is a cut file
        if untitled_ids != items["title"].to_numpy()[unlisted].tolist():
            raise SavedRunError(
                f"{run_path / 'artefacts' / 'catalogue.csv'} is damaged or was edited: it lacks movies that items.csv "
                "holds (cut short?); run `embedlab movies` again"
            )
        return cls(v=v, items=items, metric=cfg.metric, min_likes=cfg.min_likes, catalogue=catalogue)

    def similar(
        self, title: str | int, k: int = 10, metric: str | None = None, min_likes: int | None = None
    ) -> pd.DataFrame:
        """The ``k`` movies closest to ``title`` (typed the way people type it, or a movieId) by ``metric`` (default:
        the embedding's) among those with >= ``min_likes`` likes: rank, title, genres, similarity and likes."""
        if k < 1:
            raise InputError(f"--top must be >= 1, got {k}")
        metric = metric or self.metric
        min_likes = self.min_likes if min_likes is None else min_likes
        if min_likes < 0:
            raise InputError(f"--min-likes must be >= 0 (got {min_likes})")
        likes = self.items["likes"].to_numpy()
        eligible = eligible_items(likes, min_likes)
        if not bool(eligible.any()):
            raise InputError(
                f"no movie has >= {min_likes} likes in this run (the most-liked has {int(likes.max())}); lower"
                " --min-likes"
            )
        match = None if isinstance(title, (int, np.integer)) else self._find(title, eligible)
        movie_id = int(title) if match is None else match.movie_id
        rows = np.flatnonzero(self.items["movieId"].to_numpy() == movie_id)
        if len(rows) == 0:
            raise nobody_liked(str(title), "in this run")
        row = int(rows[0])
        idx, scores = similar_items(self.v, row, k, eligible, metric)
        if len(idx) == 0:
            raise InputError(
                f"no other movie has >= {min_likes} likes in this run, so there is nothing to recommend; lower"
                " --min-likes"
            )
        table = top_table(self.items, idx, scores, ("title", "genres"))
        notes = [match.note] if match is not None and match.note else []
        if likes[row] < min_likes:
            notes.append(
                f"{self.items['title'].iat[row]} itself has only {int(likes[row])} likes (< {min_likes}): its vector is"
                " mostly noise, so read this list with care"
            )
        query = str(self.items["title"].iat[row])
        table.attrs.update(query=query, metric=metric, min_likes=min_likes, note="; ".join(notes))
        return table

    def _find(self, title: str, eligible: np.ndarray) -> TitleMatch:
        """The film ``title`` names among every movie of the release (the most liked of several, as report.html's
        explorer answers); for none, the close titles suggested are the movies it may recommend (``eligible``: those
        the explorer holds and can answer)."""
        source = self.catalogue
        movies = source[["movieId", "title"]].assign(year=[split_title(str(t))[1] for t in source["title"]])
        movies["year"] = movies["year"].astype("Int64")
        every = TitleIndex.with_likes(movies, self.items["movieId"], self.items["likes"])
        answerable = set(self.items["movieId"].to_numpy()[eligible].tolist())
        pool = [i for i, m in enumerate(movies["movieId"]) if int(m) in answerable]
        return every.find(title, pool)


class SavedRunError(InputError):
    """A run folder's saved files are missing, damaged or do not belong together."""


def _read_table(store: Store, name: str, columns: dict[str, str]) -> pd.DataFrame:
    """A table the movie run saved, with its columns and their types checked: a cut or edited file is a user error."""
    path = store.artefact(name)
    if path is None:
        raise SavedRunError(f"artefacts/{name} is missing from the run folder {store.path} (or is not a file)")
    damaged = f"{path} is damaged or was edited"
    try:
        df = pd.read_csv(path, dtype={c: "str" for c, t in columns.items() if t == "str"}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise SavedRunError(
            f"{damaged} ({type(exc).__name__}: {str(exc).splitlines()[0]}); run `embedlab movies` again"
        ) from None
    if missing := [c for c in columns if c not in df.columns]:
        raise SavedRunError(f"{damaged}: it lacks column(s) {missing}; run `embedlab movies` again")
    for col, kind in columns.items():
        if kind == "str":
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any() or (values % 1 != 0).any() or (values < 0).any():
            row = int((values.isna() | (values % 1 != 0) | (values < 0)).to_numpy().argmax())
            raise SavedRunError(
                f"{damaged}: column {col!r} holds {df[col].iat[row]!r} on data line {row + 1}, not a count; "
                "run `embedlab movies` again"
            )
        df[col] = values.astype(kind)
    return df


#: What ``MovieEmbedding.save`` writes: a format name, the vectors, and the rest as JSON text (no object arrays, so
#: ``np.load(allow_pickle=False)`` reads it), with the sha256 of them all beside.
FILE_FORMAT = "embedlab.MovieEmbedding/1"
FILE_ARRAYS = ("format", "v", "items", "catalogue", "settings")


def _arrays_of(emb: MovieEmbedding) -> dict[str, np.ndarray]:
    def table(df: pd.DataFrame) -> np.ndarray:
        return np.array(json.dumps({c: df[c].tolist() for c in df.columns}, ensure_ascii=True))

    return {
        "format": np.array(FILE_FORMAT),
        "v": emb.v.detach().cpu().numpy().astype(np.float32),
        "items": table(emb.items[["movieId", "title", "genres", "likes"]]),
        "catalogue": table(emb.catalogue[["movieId", "title"]]),
        "settings": np.array(json.dumps({"metric": emb.metric, "min_likes": int(emb.min_likes)})),
    }


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in FILE_ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _frame(text: str, columns: dict[str, type]) -> pd.DataFrame:
    data = json.loads(text)
    return pd.DataFrame(
        {c: np.asarray(data[c], dtype=t) if t is not str else [str(x) for x in data[c]] for c, t in columns.items()}
    )
