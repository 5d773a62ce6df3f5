"""Claim: one cost+gradient evaluation costs <= 1.5x one sparse product X @ V at the default dimension.

Both are timed in this process, interleaved, on the same X and V; the ratio is what counts.
Usage: python bench/movies_cost_grad.py [--data-dir DIR] [--dim 32] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _movies_data import colike_matrix  # noqa: E402

from embedlab.config import MoviesConfig  # noqa: E402
from embedlab.movies.objective import cost_and_grad, frobenius_sq, to_torch_csr  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir")
    ap.add_argument("--dim", type=int, default=MoviesConfig().dim)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    x, source = colike_matrix(args.data_dir)
    xt, fro = to_torch_csr(x), frobenius_sq(x)
    v = torch.randn(x.shape[0], args.dim) * 0.5
    for _ in range(3):  # warm-up
        xt @ v
        cost_and_grad(v, xt, fro)
    t_mm, t_cg = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        xt @ v
        t1 = time.perf_counter()
        cost_and_grad(v, xt, fro)
        t2 = time.perf_counter()
        t_mm.append(t1 - t0)
        t_cg.append(t2 - t1)
    mm, cg = sorted(t_mm)[len(t_mm) // 2], sorted(t_cg)[len(t_cg) // 2]
    print(f"data: {source}; X {x.shape[0]}x{x.shape[1]}, nnz {x.nnz:,}; d={args.dim}; torch threads {torch.get_num_threads()}")
    print(f"sparse X@V      median {1000 * mm:.2f} ms")
    print(f"cost + gradient median {1000 * cg:.2f} ms")
    print(f"ratio cost+grad / X@V = {cg / mm:.3f}  (claim: <= 1.5)")


if __name__ == "__main__":
    main()
