"""Inference runtimes: each one the machine has gives torch's outputs through the same ``extract`` call, ``--runtime``
chooses among them and refuses one that is not there in one line, and the feature cache never serves one runtime's
features for another's."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from embedlab.cli import main
from embedlab.errors import InputError
from embedlab.vision import runtime
from embedlab.vision.features import Inputs, cache_key, extract, numerics


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise, as in EfficientNet-Lite
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    for m in net.modules():  # statistics that are not the identity, so that folding them into the convolution counts
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


FP32 = [n for n, p in runtime.RUNTIMES.items() if p == "fp32"]


@pytest.mark.parametrize("name", FP32)
def test_every_fp32_runtime_gives_torchs_outputs(name):
    if name not in runtime.available("cpu"):
        pytest.skip(f"{name} is not installed here")
    net = _net()
    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    inputs = Inputs(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    want, _ = extract(net, images, inputs, batch_size=16)  # 16 + 16 + 5: a last batch of another size
    got, _ = extract(net, images, inputs, 16, "cpu", "test", runtime.engine(name, net, 24, "cpu"))
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_auto_is_openvino_then_onnxruntime_on_a_cpu_where_installed_and_torch_elsewhere(monkeypatch):
    have = runtime.available("cpu")
    want = next((n for n in ("openvino", "onnxruntime") if n in have), "torch")
    assert runtime.choose("auto", "cpu") == want
    assert runtime.choose("auto", "cuda") == "torch"  # a GPU's passes stay in torch (bf16 autocast there)
    monkeypatch.setattr(runtime, "_importable", lambda module: module == "onnxruntime")
    assert runtime.choose("auto", "cpu") == "onnxruntime"  # the fallback where OpenVINO is missing
    monkeypatch.setattr(runtime, "_importable", lambda module: False)
    assert runtime.choose("auto", "cpu") == "torch"  # and where both are


def test_a_runtime_that_is_not_there_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(runtime, "_importable", lambda module: False)
    with pytest.raises(InputError, match=r"--runtime openvino is not available here \(pip install openvino\)"):
        runtime.choose("openvino", "cpu")
    monkeypatch.setattr(runtime, "cpu_bf16", lambda: None)
    with pytest.raises(InputError, match="this CPU has no bf16 instructions"):
        runtime.choose("torch-bf16", "cpu")
    with pytest.raises(InputError, match="it runs on a CPU only"):
        runtime.choose("onnxruntime", "cuda")


def test_the_feature_cache_key_names_the_runtime_and_its_precision():
    keys = {n: cache_key("efficientnet_lite1", "abc", 128, "train", None, numerics("cpu", n)) for n in runtime.RUNTIMES}
    assert len(set(keys.values())) == len(keys)
    assert "-cpu-onnxruntime-fp32-" in keys["onnxruntime"]
    assert "-cpu-torch-bf16-" in keys["torch-bf16"]
    assert "-cpu-torch-fp32-" in keys["torch"]


def test_the_probe_records_its_runtime_and_scores_alike_on_each(cifar_root, tmp_path, capsys):
    tiny = ["--backbone", "resnet18", "--weights", "none", "--size", "32", "--val-per-class", "5", "--offline"]
    tiny += ["--l2-grid", "0.1", "--data-dir", str(cifar_root), "--cache-dir", str(tmp_path / "cache")]
    scores = {}
    for name in ("torch", "onnxruntime", "openvino"):
        if name not in runtime.available("cpu"):
            pytest.skip(f"{name} is not installed here")
        out = tmp_path / name
        assert main(["vision", "probe", *tiny, "--runtime", name, "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())["probe"]
        assert metrics["runtime"] == name
        assert f"-cpu-{name}-fp32-" in (out / "artefacts" / "feature_cache.txt").read_text()
        assert f"on cpu ({name})" in capsys.readouterr().out
        scores[name] = (metrics["test_accuracy"], metrics["val_accuracy"])
    assert scores["torch"] == scores["onnxruntime"] == scores["openvino"]
