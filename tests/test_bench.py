"""Every benchmark script runs, on a tiny size: a smoke run of each, not a timing (the timings are run by hand, with
nothing else busy, as docs/performance.md says). All of them run in one child process, one after the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"

#: Each script and the arguments that make it tiny; a reason instead of arguments where it cannot run here.
TINY: dict[str, list[str] | str] = {
    "gpu_throughput.py": (
        ["--batch", "2", "--steps", "1", "--size", "32", "--backbones", "resnet18"]
        if torch.cuda.is_available()
        else "needs a CUDA device"
    ),
    "movies_cost_grad.py": ["--dims", "8", "--repeats", "1"],
    "movies_ease.py": ["--share", "0.05", "--movies", "300", "--lambdas", "100", "--rounds", "1"],
    "movies_titles.py": ["--copies", "1", "--rounds", "1"],
    "movies_gram.py": ["--synthetic", "1x", "--rounds", "1"],
    "movies_scale.py": ["--sizes", "1x", "--dim", "8", "--iterations", "2"],
    "movies_spectral.py": ["--dim", "8", "--rounds", "1", "--maxiter", "2"],
    "movies_sweep.py": ["--dims", "8", "--iterations", "5"],
    "vision_backbones.py": [
        "--size",
        "32",
        "--batch",
        "4",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--candidates",
        "efficientnet_lite0:0,efficientnet_lite1:3",
        "--probe-size",
        "32",
    ],
    "vision_compile.py": (
        "torch.compile takes about a minute even on resnet18 at 16 px: "
        "python bench/vision_compile.py --backbone resnet18 --size 16 --batch 2 --steps 1 --rounds 1"
    ),
    "vision_depthwise.py": ["--weights", "none", "--size", "32", "--batch", "2", "--steps", "1", "--rounds", "1"],
    "vision_extract.py": ["--size", "32", "--batch", "4", "--batches", "2", "--rounds", "1"],
    "vision_malloc.py": [
        "--size",
        "32",
        "--batch",
        "4",
        "--steps",
        "2",
        "--rounds",
        "1",
        "--extract-size",
        "32",
        "--images",
        "16",
    ],
    "vision_frozen_runtime.py": ["--size", "32", "--batch", "4", "--steps", "1", "--rounds", "1"],
    "vision_estimate.py": ["--size", "32", "--batch", "4", "--images", "16", "--seconds", "0,0.1"],
    "vision_openvino_modes.py": ["--size", "32", "--batch", "4", "--images", "16", "--rounds", "1"],
    "vision_inference_batch.py": ["--size", "32", "--images", "16", "--candidates", "8,16", "--rounds", "1"],
    "vision_runtime_agreement.py": (
        "needs a fine-tuning run folder and CIFAR-10: python bench/vision_runtime_agreement.py RUN --data-dir DATA"
    ),
    "vision_tta.py": "needs a fine-tuning run folder and CIFAR-10: python bench/vision_tta.py RUN",
    "vision_runtimes.py": ["--size", "32", "--batch", "4", "--batches", "2", "--rounds", "1", "--head"],
    "vision_profile.py": [
        "--backbone",
        "resnet18",
        "--train-size",
        "16",
        "--train-batch",
        "2",
        "--extract-size",
        "16",
        "--extract-batch",
        "2",
        "--steps",
        "1",
        "--rows",
        "1",
    ],
    "vision_recipe_time.py": [
        "--candidates",
        "efficientnet_lite0:0:8",
        "--size",
        "32",
        "--probe-size",
        "32",
        "--steps",
        "1",
        "--images",
        "16",
        "--rounds",
        "1",
    ],
    "vision_sprite.py": ["{run}"],
    "vision_train.py": ["--size", "32", "--batch", "4", "--steps", "1", "--rounds", "1"],
}

DRIVER = r"""
import contextlib, io, json, runpy, sys, time, traceback
sys.path.insert(0, sys.argv[1])
out = {}
for name, args in json.loads(sys.argv[2]).items():
    sys.argv = [name, *args]
    buf, t0 = io.StringIO(), time.perf_counter()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(f"{sys.path[0]}/{name}", run_name="__main__")
        error = None
    except BaseException:
        error = traceback.format_exc()[-2000:]
    out[name] = {"error": error, "printed": buf.getvalue()[-2000:], "seconds": round(time.perf_counter() - t0, 1)}
print("RESULTS " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    (run / "artefacts").mkdir()
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    np.savez_compressed(run / "artefacts" / "probe_view_images.npz", test_index=np.arange(6), images=images)
    todo = {name: [a.format(run=run) for a in args] for name, args in TINY.items() if isinstance(args, list)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(BENCH), json.dumps(todo)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path_factory.mktemp("cwd"),
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line is not None, done.stderr[-3000:]
    return json.loads(line.removeprefix("RESULTS "))


def test_every_script_is_listed():
    assert sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")) == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_script_runs_on_a_tiny_size(ran, name):
    if isinstance(TINY[name], str):
        pytest.skip(TINY[name])
    result = ran[name]
    assert result["error"] is None, result["error"]
    assert result["printed"].strip(), "it printed nothing"
