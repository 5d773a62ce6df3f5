"""A finished movies run, reloaded for fast recommendations without refitting or the raw data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedlab.movies.movielens import TitleIndex, TitleLookupError
from embedlab.movies.recommend import eligible_items, similar_items


@dataclass
class SavedEmbeddings:
    """Embeddings, item table and the run's recommendation settings."""

    v: torch.Tensor
    items: pd.DataFrame
    metric: str
    min_likes: int

    @classmethod
    def load(cls, run_path: Path) -> SavedEmbeddings:
        emb = run_path / "artefacts" / "embeddings.npz"
        if not emb.is_file():
            raise FileNotFoundError(f"{emb} is missing: the movies run in {run_path} did not finish its fit")
        with np.load(emb) as z:
            v = torch.from_numpy(z["v"])
        items = pd.read_csv(run_path / "artefacts" / "items.csv")
        cfg = json.loads((run_path / "config.json").read_text())["movies"]
        return cls(v=v, items=items, metric=cfg["metric"], min_likes=int(cfg["min_likes"]))

    def recommend(self, title: str, k: int = 10, metric: str | None = None, min_likes: int | None = None) -> pd.DataFrame:
        """Top-k table for a title typed the way users type it."""
        if k < 1:
            raise ValueError(f"--top must be >= 1, got {k}")
        metric = metric or self.metric
        min_likes = self.min_likes if min_likes is None else min_likes
        movies = self.items[["movieId", "title", "genres"]].assign(year=self.items["year"].astype("Int64"))
        row = int(np.flatnonzero(self.items["movieId"].to_numpy() == TitleIndex(movies).lookup(title))[0])
        if int(self.items["likes"].iat[row]) == 0:
            raise TitleLookupError(f"{title!r} has no likes in this run", [])
        idx, scores = similar_items(self.v, row, k, eligible_items(self.items["likes"].to_numpy(), min_likes), metric)
        table = self.items.iloc[idx][["title", "genres", "likes"]].reset_index(drop=True)
        table.insert(0, "rank", np.arange(1, len(table) + 1))
        table.insert(3, "similarity", np.round(scores.astype(float), 4))
        table.attrs.update(query=str(self.items["title"].iat[row]), metric=metric, min_likes=min_likes)
        return table
