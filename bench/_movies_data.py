"""Shared set-up for the movie benchmarks: the real like matrix (or a synthetic one of the same shape) and a timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import scipy.sparse as sp

from embedlab.data import resolve_data_dir
from embedlab.movies.cooccurrence import build_colikes
from embedlab.movies.movielens import load_ratings
from embedlab.movies.synthetic import generate


def like_matrix(data_dir: str | None) -> tuple[sp.csr_matrix, str]:
    """L from ml-latest-small when it is found, else from a synthetic table of its shape."""
    folder = Path(resolve_data_dir(data_dir)) / "ml-latest-small"
    if (folder / "ratings.csv").is_file():
        return build_colikes(load_ratings(folder), 4.0).likes, f"ml-latest-small ({folder})"
    return (
        build_colikes(generate("ml-latest-small").ratings, 4.0).likes,
        "synthetic ml-latest-small shape (real data not found)",
    )


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run_with_one_blas_thread(main: Callable[[], None]) -> None:
    """As run_movies does: numpy's idle BLAS threads would otherwise steal torch's cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        main()
