"""Synthetic CIFAR-10 batches written by the tests, in the official python format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from embedlab.vision import cifar10


def write_batch(path: Path, n: int, seed: int) -> None:
    """A batch with class-dependent colours so that even a random network separates some classes."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).tolist()
    base = np.array(labels)[:, None] * 24 + 10
    data = np.clip(base + rng.integers(-10, 10, (n, 3072)), 0, 255).astype(np.uint8)
    with open(path, "wb") as f:
        pickle.dump({"batch_label": "synthetic", "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}, f, protocol=2)


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/cifar-10-batches-py with 5 x 60 training and 100 test images; the md5 table is pointed at them."""
    folder = tmp_path / "data" / cifar10.DIRNAME
    folder.mkdir(parents=True)
    for i, name in enumerate([*cifar10.TRAIN_FILES, "test_batch"]):
        write_batch(folder / name, 100 if name == "test_batch" else 60, seed=i)
        monkeypatch.setitem(cifar10.MD5, name, cifar10.md5_bytes((folder / name).read_bytes()))
    return tmp_path / "data"
