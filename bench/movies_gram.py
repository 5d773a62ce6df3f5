"""Claim: one compiled pass over the pairs of likes gives X's non-zeros, ||X||_F^2 and the held-out training users'
||X||_F^2 many times faster than scipy's sparse product block by block.

In one process, taking turns on the same ratings: (a) the scipy way: each block of rows of L^T L formed by scipy's
sparse product and reduced to its non-zeros and sum of squares, for all users and again for the training users (as
the study computed them before); (b) ``gram.gram_stats``, one pass with the training users marked. Both give the
same integers (checked); the ratio is b / a. The first call of (b) compiles it (cached on disk after), so a warm-up
call of (b) comes before the rounds.
Usage: python bench/movies_gram.py [--synthetic 64x] [--rounds 2]   (ml-latest-small itself: --synthetic none)
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

from embedlab.config import MoviesConfig
from embedlab.movies.cooccurrence import build_colikes, row_chunks
from embedlab.movies.gram import gram_stats
from embedlab.movies.prepare import training_users
from embedlab.movies.synthetic import generate


def scipy_pass(a: sp.csr_matrix, entries: int = 20_000_000) -> tuple[int, int]:
    """(non-zeros, sum of squares) off the diagonal of A A^T, a block of rows at a time by scipy, on every core."""
    at = a.T.tocsr()

    def block(rows: np.ndarray) -> tuple[int, float]:
        b = a[rows] @ at
        return int(b.nnz), float(np.dot(b.data, b.data))

    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        parts = list(pool.map(block, row_chunks(a.shape[0], a.shape[0], entries)))
    diag = np.asarray(a.sum(axis=1)).ravel()
    return sum(p[0] for p in parts) - int(np.count_nonzero(diag)), int(sum(p[1] for p in parts) - float(diag @ diag))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument(
        "--synthetic", default="64x", help="shape of generated ratings (8x, 64x, ml-32m, ...); none: ml-latest-small"
    )
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cfg = MoviesConfig()
    if args.synthetic == "none":
        from embedlab.data import resolve_data_dir
        from embedlab.movies.movielens import load_ratings

        ratings = load_ratings(resolve_data_dir(args.data_dir) / "ml-latest-small")
        name = "ml-latest-small"
    else:
        ratings, name = generate(args.synthetic, seed=0).ratings, f"synthetic {args.synthetic}"
    co = build_colikes(ratings, cfg.like_threshold)
    part = training_users(cfg, ratings, co)
    assert part is not None
    lt = sp.csr_matrix(co.likes.T, dtype=np.float64).tocsr()
    lt_train = sp.csr_matrix(co.likes[part].T, dtype=np.float64).tocsr()
    print(
        f"{name}: {co.likes.shape[0]:,} users, {co.n_movies:,} movies, {co.likes.nnz:,} likes; {int(part.sum()):,}"
        " training users"
    )
    gram_stats(lt, part)  # compiles on the first call ever (then cached)
    for r in range(args.rounds):
        t0 = time.perf_counter()
        (nnz_a, sq_a), (_, part_a) = scipy_pass(lt), scipy_pass(lt_train)
        a = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = gram_stats(lt, part)
        b = time.perf_counter() - t0
        assert (nnz_a, sq_a, part_a) == (s.nnz, s.sq, s.part_sq), ((nnz_a, sq_a, part_a), s)
        print(
            f"round {r + 1}: scipy blocks, all users + training users {a:.2f} s; compiled pass {b:.2f} s; ratio"
            f" {b / a:.4f} (nnz {s.nnz:,}, ||X||_F^2 {s.sq:,}, training users' {s.part_sq:,}: equal)"
        )


if __name__ == "__main__":
    main()
