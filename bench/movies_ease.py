"""Claim under test: EASE's weights come many times faster from the users' side (Woodbury's identity, a users x users
solve) than from the M x M inverse of L^T L + lambda I, with the same recommendations, when there are fewer users
than movies (ml-latest-small: about 390 tuning users, 6,000 movies).

In one process, taking turns, on the like matrix of a seeded share of the users (the held-out evaluation tunes EASE
on 0.8 x 0.8 of them): (a) the inverse, as the study computed it before (``anchors.ease_weights_by_inverse``:
Cholesky and its inverse); (b) ``anchors.ease_weights``. Printed: seconds of each per lambda, the ratio b / a, the
largest difference of the weights and the share of movies whose top-10 list is the same.
Usage: python bench/movies_ease.py [--data-dir DIR] [--share 0.64] [--movies M] [--lambdas 300,30000] [--rounds 2]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _movies_data import like_matrix

from embedlab.movies.anchors import ease_weights, ease_weights_by_inverse


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--share", type=float, default=0.64, help="share of the users that EASE is fitted on")
    ap.add_argument("--movies", type=int, help="the first M movies only (default: all)")
    ap.add_argument("--lambdas", default="300,30000")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    likes, what = like_matrix(args.data_dir)
    users = np.sort(np.random.default_rng(0).permutation(likes.shape[0])[: round(args.share * likes.shape[0])])
    fit = likes[users][:, : args.movies]
    print(f"{what}: {fit.shape[0]:,} users x {fit.shape[1]:,} movies, torch {torch.get_num_threads()} threads")
    ease_weights(fit, 1.0)  # warm-up
    for lam in (float(v) for v in args.lambdas.split(",")):
        a_s, b_s = [], []
        for _ in range(args.rounds):
            a, old = timed(ease_weights_by_inverse, fit, lam)
            b, new = timed(ease_weights, fit, lam)
            a_s.append(a)
            b_s.append(b)
        same = (torch.topk(old, 10, dim=1).indices == torch.topk(new, 10, dim=1).indices).all(1).float().mean()
        print(
            f"lambda {lam:g}: inverse {min(a_s):.2f} s, users' side {min(b_s):.3f} s, ratio {min(b_s) / min(a_s):.3f};"
            f" largest difference {(old - new).abs().max():.1e} of {old.abs().max():.1e}; top-10 lists equal for"
            f" {100 * float(same):.2f} % of movies"
        )


if __name__ == "__main__":
    main()
