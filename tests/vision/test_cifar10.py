import os
import pickle

import pytest
import torch

from embedlab.data import DataNotFoundError
from embedlab.vision import cifar10
from embedlab.vision.cifar10 import CifarDataError, ensure_cifar10, load_cifar10, safe_load, stratified_split, subsample


def test_loads_synthetic_batches(cifar_root):
    d = load_cifar10(cifar_root / cifar10.DIRNAME)
    assert d.train_x.shape == (300, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (100, 3, 32, 32) and d.test_y[:3].tolist() == [0, 1, 2]


def test_md5_mismatch_and_truncation_are_reported(cifar_root):
    path = cifar_root / cifar10.DIRNAME / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CifarDataError, match=r"data_batch_3 has md5 .* \(truncated or altered\)"):
        load_cifar10(cifar_root / cifar10.DIRNAME)
    path.unlink()
    with pytest.raises(CifarDataError, match="data_batch_3 is missing"):
        load_cifar10(cifar_root / cifar10.DIRNAME)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = pickle.dumps({"data": Exploit(), "labels": [0]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="forbidden"):
        safe_load(raw)
    assert not (tmp_path / "pwned-by-pickle").exists()
    # and through the loader, even with the md5 check bypassed
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(raw)
    with pytest.raises(CifarDataError, match="not a valid CIFAR-10 batch"):
        cifar10._read_batch(folder / "data_batch_1", None)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_missing_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data-dir") as err:
        ensure_cifar10(tmp_path, download=None)
    assert "data_batch_1" in str(err.value) and "EMBEDLAB_DATA_DIR" in str(err.value)


def test_stratified_split_and_subsample():
    labels = torch.arange(1000) % 10
    tr, va = stratified_split(labels, 20, seed=1)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0 and len(tr) + len(va) == 1000
    assert torch.bincount(labels[va]).tolist() == [20] * 10
    assert torch.equal(va, stratified_split(labels, 20, seed=1)[1])
    sub = subsample(labels, tr, 7, seed=0)
    assert torch.bincount(labels[sub]).tolist() == [7] * 10
    with pytest.raises(ValueError, match="cannot hold out"):
        stratified_split(labels, 100, 0)


def test_real_cifar10(real_cifar):
    d = load_cifar10(real_cifar)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert d.train_x[0, 0, 0, :3].tolist() == [59, 43, 50] and int(d.test_y[0]) == 3
