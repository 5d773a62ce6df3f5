"""Shared set-up for the movie benchmarks: the real co-like matrix, or a synthetic one of the same size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedlab.data import resolve_data_dir
from embedlab.movies.cooccurrence import build_colikes


def colike_matrix(data_dir: str | None) -> tuple[sp.csr_matrix, str]:
    """X from ml-latest-small when it is found, else from random likes of similar size."""
    folder = Path(resolve_data_dir(data_dir)) / "ml-latest-small"
    if (folder / "ratings.csv").is_file():
        ratings = pd.read_csv(folder / "ratings.csv")
        return build_colikes(ratings, 4.0).x, f"ml-latest-small ({folder})"
    rng = np.random.default_rng(0)
    n = 48_580
    ratings = pd.DataFrame({"userId": rng.integers(0, 610, n), "movieId": rng.zipf(1.3, n) % 6300, "rating": 5.0})
    return build_colikes(ratings, 4.0).x, "synthetic (ml-latest-small not found)"
