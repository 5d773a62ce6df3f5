"""torch.distributed: 2 gloo processes give the single-process results; mismatched ranks fail together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch.multiprocessing as mp
from conftest import with_flags

from embedlab.distributed import balanced_rows

ARGS = [
    "--profile",
    "smoke",
    "--dim",
    "4",
    "--iterations",
    "40",
    "--min-likes",
    "2",
    "--offline",
    "--no-map",
    "--dim-sweep",
    "3",
    "--allow-modified-data",
]  # the test's own ratings are not the official release


def _embedlab(*args: str, procs: int = 1) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
        if procs > 1
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*launcher, "-m", "embedlab", "movies", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_two_gloo_processes_equal_one(movielens_root, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _embedlab("--data-dir", str(movielens_root), "--out", str(one), *ARGS)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _embedlab("--data-dir", str(movielens_root), "--out", str(two), *ARGS, procs=2)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert json.loads((two / "metrics.json").read_text())["movies_fit"]["processes"] == 2
    h1 = pd.read_csv(one / "artefacts" / "loss_histories.csv")
    h2 = pd.read_csv(two / "artefacts" / "loss_histories.csv")
    assert (
        len(h1) == len(h2)
        and (h1[["optimizer", "lr", "iteration"]] == h2[["optimizer", "lr", "iteration"]]).all().all()
    )
    np.testing.assert_allclose(h2["cost"], h1["cost"], rtol=1e-5)
    with np.load(one / "artefacts" / "embeddings.npz") as a, np.load(two / "artefacts" / "embeddings.npz") as b:
        # the sweep's best run: the same V to 1e-5 (same start, same steps, sums in another order)
        np.testing.assert_allclose(
            b["v_sweep_best"], a["v_sweep_best"], rtol=1e-5, atol=1e-5 * np.abs(a["v_sweep_best"]).max()
        )
        # the run to convergence stops where the cost flattens, so V may drift along near-flat (rotation)
        # directions: compare what the cost sees, V V^T
        gram_a, gram_b = a["v"] @ a["v"].T, b["v"] @ b["v"].T
        np.testing.assert_allclose(gram_b, gram_a, atol=2e-3 * np.abs(gram_a).max())
        np.testing.assert_allclose(
            b["v_spectral"] @ b["v_spectral"].T,
            a["v_spectral"] @ a["v_spectral"].T,
            rtol=1e-4,
            atol=1e-5 * np.abs(a["v_spectral"]).max() ** 2,
        )
    # rank 0 alone wrote a run folder: nothing else appeared next to the two runs
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("data",)) == ["one", "two"]


def _check_worker(rank: int, init_file: str, results: dict) -> None:
    import torch.distributed as tdist

    from embedlab.distributed import Dist, DistributedMismatch

    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    dist = Dist(rank=rank, world=2, backend="gloo")
    try:
        dist.check_same("likes matrix", b"same")  # equal: passes
        dist.check_same("likes matrix", b"rank %d" % rank)
        results[rank] = "passed"
    except DistributedMismatch as exc:
        results[rank] = str(exc)
    finally:
        tdist.destroy_process_group()


def test_mismatched_data_fails_on_every_rank(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_check_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    assert all("loaded different likes matrix" in results[r] for r in (0, 1)), dict(results)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_balanced_rows_cover_every_row_once(world):
    w = np.random.default_rng(world).integers(0, 50, 40)
    blocks = [balanced_rows(w, world, r) for r in range(world)]
    assert blocks[0].start == 0 and blocks[-1].stop == 40
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
    if world > 1:
        loads = [w[b].sum() for b in blocks]
        assert max(loads) - min(loads) <= 2 * w.max()


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "embedlab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "movies" in r.stdout


def test_torchrun_study_trains_with_ddp_and_rank_0_alone_writes(real_data, tmp_path):
    """`torchrun -m embedlab run` on the real data's smoke subsets: the probe on rank 0, fine-tuning on both ranks."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "scratch")}
    (tmp_path / "scratch").mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "embedlab",
            "run",
            "--profile",
            "smoke",
            "--data-dir",
            str(real_data),
            "--backbone",
            "efficientnet_lite0",
            "--offline",
            "--steps",
            "probe,finetune",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finetune"]["processes"] == 2 and metrics["finetune"]["batch_per_process"] == 16
    assert metrics["finetune"]["head_init"] == "probe"  # rank 0 starts the head from the probe; DDP copies it to rank 1
    assert {s: v["status"] for s, v in metrics["steps"].items()} == {"probe": "done", "finetune": "done"}
    assert (
        "comparison" in metrics
        and (out / "report.html").is_file()
        and (out / "artefacts" / "finetune_test_probs.npz").is_file()
    )
    # rank 1's scratch folder is gone (torchrun keeps its own)
    assert not list((tmp_path / "scratch").glob("embedlab-rank*"))
    assert r.stdout.count("summary:") == 1  # one rank reports


def test_the_ranks_error_lines_never_run_together(movielens_root, tmp_path):
    r = _embedlab(
        "--data-dir",
        str(movielens_root),
        "--out",
        str(tmp_path / "o"),
        *with_flags(ARGS, "--min-likes", "100000"),
        procs=2,
    )
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if "embedlab:" in line]
    assert sorted(line.split("]")[0] for line in lines) == [
        "embedlab: error: [rank 0",
        "embedlab: error: [rank 1",
    ], r.stderr[-3000:]
    assert all(
        line.count("embedlab:") == 1 and "--min-likes 100000: 0 movie(s) have that many likes" in line for line in lines
    )
    # torchrun's launcher prints its own ChildFailedError report; no trace of embedlab's code (whatever the clone is
    # called)
    import embedlab

    assert str(Path(embedlab.__file__).resolve().parent) not in r.stderr
