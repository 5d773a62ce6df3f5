"""Claim: one gradient step grows linearly in the number of likes, from ml-latest-small's size to ML-32M's.

For each size a fresh process generates the synthetic ratings (shape of the name, distributions fitted
to ml-latest-small), builds L and the factored operator and times cost + gradient + one Adam step;
its peak memory is that process's. Printed: seconds per iteration, peak memory, and the growth factor
(time ratio / likes ratio against the first size: 1.0 = linear).

Usage: python bench/movies_scale.py [--sizes 1x,8x,64x,ml-32m] [--dim 32] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def one(size: str, dim: int, iterations: int) -> dict[str, float]:
    import torch
    from _movies_data import median_seconds

    from embedlab.movies.cooccurrence import build_colikes, colike_fro_sq
    from embedlab.movies.objective import CoLikeOperator, cost_and_grad
    from embedlab.movies.synthetic import generate
    from embedlab.movies.train import initial_embedding, sweep_optimizer

    t0 = time.perf_counter()
    data = generate(size, seed=0)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    co = build_colikes(data.ratings, 4.0)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fro = colike_fro_sq(co.likes)
    fro_s = time.perf_counter() - t0
    op = CoLikeOperator.from_likes(co.likes, fro)
    v = initial_embedding(co.n_movies, dim, 0, 0.1)
    opt = sweep_optimizer("adam", [v], 0.01)

    def step() -> None:
        _, g = cost_and_grad(v, op)
        v.grad = g
        opt.step()

    per_iter = median_seconds(step, iterations)
    return {
        "size": size,
        "users": int(co.likes.shape[0]),
        "movies": int(co.n_movies),
        "ratings": len(data.ratings),
        "likes": int(co.likes.nnz),
        "seconds_per_iteration": per_iter,
        "generate_s": gen_s,
        "build_L_s": build_s,
        "fro_sq_s": fro_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1x,8x,64x,ml-32m")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # as run_movies does: numpy's idle BLAS threads would steal torch's cores
            print(json.dumps(one(args.one, args.dim, args.iterations)))
        return
    rows = []
    for size in args.sizes.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", size, "--dim", str(args.dim), "--iterations", str(args.iterations)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"measured {size}", file=sys.stderr)
    base = rows[0]
    print(
        f"d = {args.dim}, {args.iterations} timed iterations (cost + gradient + Adam step) per size, {base['threads']}"
        " threads"
    )
    print(
        "| size | users | movies | likes | ms / iteration | likes x | time x | growth (time x / likes x) | peak memory"
        " | ||X||²_F pass |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lx, tx = r["likes"] / base["likes"], r["seconds_per_iteration"] / base["seconds_per_iteration"]
        print(
            f"| {r['size']} | {r['users']:,} | {r['movies']:,} | {r['likes']:,} |"
            f" {1000 * r['seconds_per_iteration']:.1f} | {lx:.1f} | {tx:.1f} | {tx / lx:.2f} | {r['peak_rss_gib']:.2f}"
            f" GiB | {r['fro_sq_s']:.1f} s |"
        )


if __name__ == "__main__":
    main()
