"""CIFAR-10 from the official python-format batches, read safely and verified.

The batches are pickles. ``pickle.load`` would run whatever a tampered file asks for, so they are
read with a restricted unpickler that admits only the handful of globals the official files need
(numpy array reconstruction), and every file is checked against the official md5 first.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedlab.errors import InputError

DIRNAME = "cifar-10-batches-py"
#: md5 of the official files (the same list torchvision's CIFAR10 class checks).
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TORCHVISION_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
}


class CifarDataError(InputError):
    """A CIFAR-10 file is missing, truncated, altered or unsafe; the message says which and how to fix it."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside a short allow-list (no code can run)."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden in a CIFAR-10 batch")


def safe_load(raw: bytes) -> dict:
    """Unpickle bytes of an official batch (Python 2 protocol: byte strings as latin1)."""
    obj = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(obj).__name__}")
    return obj


def md5_bytes(raw: bytes) -> str:
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Cifar10:
    """uint8 images (N, 3, 32, 32) and int64 labels for the official train and test splits."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...] = CLASSES


def _read_batch(path: Path, expected_md5: str | None) -> dict:
    if not path.is_file():
        raise CifarDataError(f"{path} is missing")
    raw = path.read_bytes()
    if expected_md5 is not None and md5_bytes(raw) != expected_md5:
        raise CifarDataError(
            f"{path} has md5 {md5_bytes(raw)}, expected {expected_md5} (truncated or altered); "
            "replace it with the official file from cifar-10-python.tar.gz"
        )
    try:
        return safe_load(raw)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise CifarDataError(f"{path} is not a valid CIFAR-10 batch: {exc}") from exc


def _to_tensors(batch: dict, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = batch.get("data")
    labels = batch.get("labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
        or labels is None
    ):
        raise CifarDataError(f"{path} does not hold uint8 data of shape (N, 3072) with labels")
    if len(labels) != len(data):
        raise CifarDataError(f"{path}: {len(data)} images but {len(labels)} labels")
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    y = torch.tensor(labels, dtype=torch.int64)
    if y.min() < 0 or y.max() > 9:
        raise CifarDataError(f"{path}: labels outside 0..9")
    return x, y


def load_cifar10(folder: Path, verify: bool = True) -> Cifar10:
    """Read and verify the 6 batches of ``folder`` (the cifar-10-batches-py directory)."""
    folder = Path(folder)
    parts = {}
    for name in [*TRAIN_FILES, "test_batch"]:
        path = folder / name
        parts[name] = _to_tensors(_read_batch(path, MD5[name] if verify else None), path)
    train_x = torch.cat([parts[n][0] for n in TRAIN_FILES])
    train_y = torch.cat([parts[n][1] for n in TRAIN_FILES])
    return Cifar10(train_x, train_y, *parts["test_batch"])


def ensure_cifar10(data_dir: Path, download: Callable[[Path], None] | None = None) -> Path:
    """The cifar-10-batches-py folder under ``data_dir``; downloaded through torchvision when missing and allowed."""
    from embedlab.data import ENV_VAR, DataNotFoundError

    folder = Path(data_dir) / DIRNAME
    needed = [*TRAIN_FILES, "test_batch"]
    if all((folder / n).is_file() for n in needed):
        return folder
    reason = "offline mode"
    if download is not None:
        try:
            download(Path(data_dir))
            if all((folder / n).is_file() for n in needed):
                return folder
            reason = "the download did not produce the files"
        # offline, a proxy, a full disk, a bad archive
        except (OSError, RuntimeError, ValueError, tarfile.TarError) as exc:
            reason = str(exc)
    missing = [n for n in needed if not (folder / n).is_file()]
    what = (
        f"CIFAR-10 not found: expected {', '.join(needed)} in {folder}"
        if len(missing) == len(needed)
        else f"CIFAR-10 in {folder} is incomplete: {', '.join(missing)} missing"
    )
    raise DataNotFoundError(
        f"{what}, and it could not be downloaded ({reason}).\n"
        f"Point embedlab at a folder that holds {DIRNAME}/ with --data-dir DIR or {ENV_VAR}=DIR."
    )


def torchvision_download(data_dir: Path) -> None:
    """Download and extract the official tarball via torchvision (md5-checked, with a progress bar)."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TORCHVISION_URL, str(data_dir), md5="c58f30108f718f92721af3b95e74349a")


def stratified_split(labels: torch.Tensor, val_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, stratified (train_idx, val_idx) carved from the training set."""
    gen = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        if val_per_class >= len(idx):
            raise InputError(f"class {int(c)} has only {len(idx)} images; cannot hold out {val_per_class}")
        perm = idx[torch.randperm(len(idx), generator=gen)]
        val_idx.append(perm[:val_per_class])
        train_idx.append(perm[val_per_class:])
    return torch.sort(torch.cat(train_idx)).values, torch.sort(torch.cat(val_idx)).values


def subsample(labels: torch.Tensor, idx: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """A seeded, stratified subset of ``idx`` with at most ``per_class`` images per class (None = all)."""
    if per_class is None:
        return idx
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(labels[idx]):
        sub = idx[labels[idx] == c]
        keep.append(sub[torch.randperm(len(sub), generator=gen)[:per_class]])
    return torch.sort(torch.cat(keep)).values
