"""A finished movies run, reloaded for fast recommendations without refitting or the raw data."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from embedlab.config import MoviesConfig
from embedlab.errors import InputError, MissingFileError
from embedlab.movies.movielens import TitleIndex, nobody_liked, split_title
from embedlab.movies.recommend import eligible_items, similar_items
from embedlab.movies.tables import top_table
from embedlab.store import Store


@dataclass
class SavedEmbeddings:
    """Embeddings, item table and the run's recommendation settings."""

    v: torch.Tensor
    items: pd.DataFrame
    metric: str
    min_likes: int

    catalogue: pd.DataFrame  # every movie of the release (movieId, title): tells an unknown title from one nobody liked

    @classmethod
    def load(cls, store: Store) -> SavedEmbeddings:
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
        if not np.isin(items["movieId"].to_numpy(), catalogue["movieId"].to_numpy()).all():
            raise SavedRunError(
                f"{run_path / 'artefacts' / 'catalogue.csv'} is damaged or was edited: it lacks movies that items.csv "
                "holds (cut short?); run `embedlab movies` again"
            )
        return cls(v=v, items=items, metric=cfg.metric, min_likes=cfg.min_likes, catalogue=catalogue)

    def recommend(
        self, title: str, k: int = 10, metric: str | None = None, min_likes: int | None = None
    ) -> pd.DataFrame:
        """Top-k table for a title typed the way users type it."""
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
        movie_id = self._lookup(title, eligible)
        rows = np.flatnonzero(self.items["movieId"].to_numpy() == movie_id)
        if len(rows) == 0:
            raise nobody_liked(title, "in this run")
        row = int(rows[0])
        idx, scores = similar_items(self.v, row, k, eligible, metric)
        if len(idx) == 0:
            raise InputError(
                f"no other movie has >= {min_likes} likes in this run, so there is nothing to recommend; lower"
                " --min-likes"
            )
        table = top_table(self.items, idx, scores, ("title", "genres"))
        note = (
            f"{self.items['title'].iat[row]} itself has only {int(likes[row])} likes (< {min_likes}): its vector is"
            " mostly noise, so read this list with care"
            if likes[row] < min_likes
            else ""
        )
        table.attrs.update(query=str(self.items["title"].iat[row]), metric=metric, min_likes=min_likes, note=note)
        return table

    def _lookup(self, title: str, eligible: np.ndarray) -> int:
        """movieId of ``title``: first among the movies it may recommend (``eligible``, the ones report.html's explorer
        holds), so that both answer a query alike ("lord of the rings" is the trilogy, not the 1978 film with 6 likes);
        then among every movie of the release (a film with few likes is still found, with a note)."""
        source = self.catalogue
        movies = source[["movieId", "title"]].assign(year=[split_title(str(t))[1] for t in source["title"]])
        movies["year"] = movies["year"].astype("Int64")
        every = TitleIndex.with_likes(movies, self.items["movieId"], self.items["likes"])
        shown = movies[movies["movieId"].isin(self.items["movieId"].to_numpy()[eligible])].reset_index(drop=True)
        mine = TitleIndex.with_likes(shown, self.items["movieId"], self.items["likes"])
        return (mine if title.strip() and mine.candidates(title)[1] else every).lookup(title)


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
