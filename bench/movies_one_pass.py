"""Claim: one pass over X gives the summary and the held-out training users' ||X||_F^2, for about the cost of the
summary alone, in place of a second pass over the training users' X.

In one process, taking turns on the same synthetic ratings: (a) the summary pass over the whole X, then the held-out
split's ||X_train||_F^2 computed from the training users' own L (two passes, as the study did); (b) the summary pass
with the training users marked (one pass). Both give the same numbers exactly (checked), and the ratio is b / a.
Usage: python bench/movies_one_pass.py [--synthetic ml-32m] [--rounds 1]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse
import time

from embedlab.config import MoviesConfig
from embedlab.movies.cooccurrence import build_colikes, colike_fro_sq, colike_summary
from embedlab.movies.pipeline import training_users
from embedlab.movies.synthetic import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--synthetic", default="ml-32m", help="shape of the generated ratings (8x, 64x, ml-25m, ml-32m, ...)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    cfg = MoviesConfig()
    ratings = generate(args.synthetic, seed=0).ratings
    co = build_colikes(ratings, cfg.like_threshold)
    part = training_users(cfg, ratings, co)
    assert part is not None
    train = build_colikes(ratings[ratings["userId"].isin(co.user_ids[part])], cfg.like_threshold)

    def two_passes() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        whole = colike_summary(co.likes, k=15)
        return time.perf_counter() - t0, whole.fro_sq, colike_fro_sq(train.likes)

    def one_pass() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        both = colike_summary(co.likes, k=15, part=part)
        assert both.part_fro_sq is not None
        return time.perf_counter() - t0, both.fro_sq, both.part_fro_sq

    print(f"{args.synthetic}: {co.likes.shape[0]:,} users, {co.n_movies:,} movies, {co.likes.nnz:,} likes; "
          f"{int(part.sum()):,} training users")
    for r in range(args.rounds):
        t0 = time.perf_counter()
        _, fro_a, train_a = two_passes()
        a = time.perf_counter() - t0
        b, fro_b, train_b = one_pass()
        assert (fro_a, train_a) == (fro_b, train_b), (fro_a, train_a, fro_b, train_b)
        print(f"round {r + 1}: summary + training users' pass {a:.1f} s; one pass {b:.1f} s; ratio {b / a:.3f} "
              f"(||X||_F^2 = {fro_b:.6g}, training users' {train_b:.6g}, equal)")


if __name__ == "__main__":
    main()
