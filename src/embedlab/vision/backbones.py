"""Backbones built and loaded by name (``create_backbone``, in the spirit of timm's): the registry of names and specs is
``embedlab.vision.registry``; this module builds a spec's network and loads its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from embedlab.errors import InputError, MissingFileError
from embedlab.files import UnreadableFile, file_hash, read_torch
from embedlab.vision.registry import BackboneSpec, check_freeze_stages, choose_backbone, get_spec


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
