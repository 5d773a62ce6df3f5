import torch
from torch import nn

from embedlab.vision.features import Inputs, cache_key, cached_features, extract, numerics, pick_device, preprocess


def test_preprocess_resizes_normalises_and_is_channels_last():
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = preprocess(x, 64, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.5, 0.5, 0.5]))
    assert out.shape == (2, 3, 64, 64) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, torch.ones_like(out))


def test_extract_batches_equal_one_pass():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    a, stats = extract(model, x, Inputs(40, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)), batch_size=3)
    b, _ = extract(model, x, Inputs(40, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)), batch_size=10)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert a.shape == (10, 4) and stats.images == 10 and pick_device("cpu").type == "cpu"


def test_cache_is_keyed_and_never_recomputes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).reshape(3, 2), None

    cpu = numerics(torch.device("cpu"))
    k1 = cache_key("resnet18", "abc", 64, "train", None, cpu)
    assert (
        k1
        != cache_key("resnet18", "abc", 96, "train", None, cpu)
        != cache_key("resnet18", "abd", 64, "train", None, cpu)
    )
    assert cache_key("resnet18", "abc", 64, "train", torch.tensor([1, 2]), cpu) != cache_key(
        "resnet18", "abc", 64, "train", torch.tensor([1, 3]), cpu
    )
    # the same images through other numerics (bf16 on CUDA, another preprocessing) never share a cache entry
    assert numerics(torch.device("cuda")) != cpu and "bf16" in numerics(torch.device("cuda")) and "fp32" in cpu
    assert cache_key("resnet18", "abc", 64, "train", None, numerics(torch.device("cuda"))) != k1
    a, _, path = cached_features(tmp_path, k1, compute)
    b, stats, _ = cached_features(tmp_path, k1, compute)
    assert len(calls) == 1 and stats is None and torch.equal(a, b) and path.is_file()
