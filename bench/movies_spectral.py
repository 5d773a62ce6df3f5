"""Claim under test: the spectral optimum's rounds are faster as a block method warm-started from the last round's
eigenvectors (scipy's LOBPCG) than as ARPACK's eigsh restarted from one vector, at the same cost to 1e-9.

Both run the same alternating scheme (top-d eigenpairs of X + D, then D = diag(V V^T)) on the same factored operator
in one process, taking turns; the candidate's first round is eigsh's (LOBPCG from a random block needs many more
iterations), the rounds after it LOBPCG from the previous eigenvectors. Printed: seconds, rounds, the optimum's cost
and the relative difference of the two costs.
Usage: python bench/movies_spectral.py [--data-dir DIR] [--synthetic 8x] [--dim 100] [--rounds 2] [--tol 1e-4]
[--maxiter 10]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh, lobpcg

sys.path.insert(0, str(Path(__file__).parent))

from _movies_data import like_matrix, run_with_one_blas_thread  # noqa: E402

from embedlab.movies.cooccurrence import build_colikes, colike_fro_sq  # noqa: E402
from embedlab.movies.objective import CoLikeOperator, _shifted_matvec, cost_and_grad, spectral_optimum  # noqa: E402
from embedlab.movies.synthetic import generate  # noqa: E402


def warm_lobpcg(
    op: CoLikeOperator,
    dim: int,
    max_rounds: int = 50,
    rel_tol: float = 1e-6,
    seed: int = 0,
    tol: float = 1e-9,
    maxiter: int = 200,
) -> tuple[float, int]:
    """The candidate: (best cost, rounds)."""
    op = op.to(torch.float64)
    m = op.shape[0]
    diag = np.zeros(m)
    v0 = np.random.default_rng(seed).standard_normal(m)
    history: list[float] = []
    vecs = None
    for _ in range(max_rounds):
        apply = _shifted_matvec(op, diag.copy())
        lin = LinearOperator((m, m), matvec=apply, matmat=apply, dtype=np.float64)
        if vecs is None:
            vals, vecs = eigsh(lin, k=dim, which="LA", v0=v0)
        else:
            vals, vecs = lobpcg(lin, vecs, largest=True, tol=tol, maxiter=maxiter)
            order = np.argsort(vals)
            vals, vecs = vals[order], vecs[:, order]
        vals = np.clip(vals, 0.0, None)
        v = vecs * np.sqrt(vals)[None, :]
        cost, _ = cost_and_grad(torch.from_numpy(v), op)
        history.append(cost)
        diag = (v * v).sum(axis=1)
        if len(history) > 1 and history[-2] - history[-1] <= rel_tol * abs(history[-2]):
            break
    return min(history), len(history)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--synthetic", help="a generated shape (8x, 64x, ml-32m) instead of ml-latest-small")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-4, help="LOBPCG's residual tolerance in each round")
    ap.add_argument("--maxiter", type=int, default=10, help="LOBPCG's iterations at most in each round")
    args = ap.parse_args()
    if args.synthetic:
        likes, what = build_colikes(generate(args.synthetic, seed=0).ratings, 4.0).likes, f"synthetic {args.synthetic}"
    else:
        likes, what = like_matrix(args.data_dir)
    op = CoLikeOperator.from_likes(likes, colike_fro_sq(likes))
    print(f"{what}: M = {likes.shape[1]:,}, d = {args.dim}")
    for r in range(args.rounds):
        t0 = time.perf_counter()
        today = spectral_optimum(op, args.dim)
        a = time.perf_counter() - t0
        t0 = time.perf_counter()
        cost, rounds = warm_lobpcg(op, args.dim, tol=args.tol, maxiter=args.maxiter)
        b = time.perf_counter() - t0
        print(
            f"round {r + 1}: eigsh {a:.1f} s ({len(today.history)} rounds, cost {today.cost:.10g}); warm LOBPCG {b:.1f}"
            f" s ({rounds} rounds, cost {cost:.10g}); ratio {b / a:.3f}, cost difference"
            f" {(cost - today.cost) / today.cost:+.2e}"
        )


if __name__ == "__main__":
    run_with_one_blas_thread(main)
