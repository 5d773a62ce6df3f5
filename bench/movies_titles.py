"""Claim under test: remembering each character's fate and each title's names makes the title work of a movie run
(the title index, the explorer's names, keys and digit keys, its list of other films) several times faster, with the
same keys.

In one process, taking turns: (a) with nothing remembered (``movielens._kept`` and ``movielens._title_names`` swapped
for the functions they wrap), as before; (b) as the study runs it, the memory emptied before each pass. Each pass asks
for the titles what one ``embedlab movies`` run asks: ``TitleIndex`` and the explorer's fields. Printed: seconds of
each, the ratio b / a, and whether every key is the same.
Usage: python bench/movies_titles.py [--data-dir DIR] [--copies 9] [--rounds 2]
(``--copies`` repeats ml-latest-small's 9,742 titles, each copy with its own year, to reach a catalogue of ML-32M's
size: 9 copies are 87,678 titles; run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from embedlab.data import resolve_data_dir
from embedlab.movies import movielens
from embedlab.movies.synthetic import generate
from embedlab.movies.titles import TitleIndex


def catalogue(data_dir: str | None, copies: int) -> tuple[pd.DataFrame, str]:
    """ml-latest-small's movie table (a synthetic one when it is not found), repeated ``copies`` times."""
    path = Path(resolve_data_dir(data_dir)) / "ml-latest-small" / "movies.csv"
    base, what = (
        (pd.read_csv(path), "ml-latest-small titles")
        if path.is_file()
        else (generate("ml-latest-small").movies, "synthetic titles (real data not found)")
    )
    parts = []
    for c in range(copies):  # a copy's titles differ from the others' by their year, as remakes do
        part = base.copy()
        part["title"] = (
            part["title"].astype(str).str.replace(r"\((\d{4})\)\s*$", lambda m: f"({int(m[1]) + c})", regex=True)
        )
        parts.append(part)
    return pd.concat(parts, ignore_index=True), f"{what} x {copies}"


def title_work(movies: pd.DataFrame) -> list:
    """What one run asks of the titles: the index (names and keys of every title) and the explorer's fields."""
    TitleIndex(movies)
    titles = movies["title"].astype(str).tolist()
    names = [movielens.title_names(t) for t in titles]
    keys = [movielens.title_keys(t) for t in titles]
    digits = [list(dict.fromkeys(movielens.fold_numerals(k) for k in movielens.title_keys(t))) for t in titles]
    others = [(movielens.title_keys(t), len(movielens.title_names(t))) for t in titles]
    return [names, keys, digits, others]


def forgetful() -> list:
    """``title_work`` with nothing remembered: the functions the caches wrap, swapped in for this pass."""
    kept, names = movielens._kept, movielens._title_names
    movielens._kept, movielens._title_names = kept.__wrapped__, names.__wrapped__
    try:
        return title_work(MOVIES)
    finally:
        movielens._kept, movielens._title_names = kept, names


def remembering() -> list:
    movielens._kept.cache_clear()
    movielens._title_names.cache_clear()
    return title_work(MOVIES)


def timed(fn) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    global MOVIES
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--copies", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    MOVIES, what = catalogue(args.data_dir, args.copies)
    print(f"{what}: {len(MOVIES):,} titles")
    a_s, b_s, same = [], [], True
    for _ in range(args.rounds):
        a, old = timed(forgetful)
        b, new = timed(remembering)
        a_s.append(a)
        b_s.append(b)
        same = same and old == new
    print(
        f"nothing remembered {min(a_s):.2f} s, remembered {min(b_s):.2f} s, ratio {min(b_s) / min(a_s):.3f};"
        f" every name and key the same: {same}"
    )


MOVIES = pd.DataFrame()

if __name__ == "__main__":
    main()
