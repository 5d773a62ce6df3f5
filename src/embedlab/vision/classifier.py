"""A trained CIFAR-10 classifier kept as an object, as scikit-learn keeps a fitted model: read from a finished run
(``Classifier.from_run``: the linear probe on the frozen network, or the fine-tuned network) and asked about new
images (``predict_proba``, ``predict``). ``embedlab predict`` is a thin call of it.

An image of any size or mode is made what the model was trained on: RGB, brought down to CIFAR's 32 x 32 (Lanczos,
antialiased, as CIFAR's images were made from larger photos), then resized and normalised as in training.
A handful of images runs through torch: exporting to an inference runtime costs more than it saves at that size.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from embedlab.config import FinetuneConfig, ProbeConfig
from embedlab.errors import InputError
from embedlab.overrides import DERIVED
from embedlab.store import Store
from embedlab.vision.backbones import Backbone, create_backbone
from embedlab.vision.cifar10 import CLASSES
from embedlab.vision.features import Inputs, preprocess
from embedlab.vision.probe import LogisticRegression
from embedlab.vision.recipe import Views, passes, tta_views

#: Images per forward pass.
BATCH = 16


class NotAnImage(InputError):
    """A file that is not a readable image: a folder, an empty or cut file, text."""


def read_image(path: str | Path) -> np.ndarray:
    """The image file ``path`` as CIFAR-shaped uint8 (32, 32, 3): converted to RGB, then brought down (or up) to
    32 x 32; anything PIL cannot decode whole is a ``NotAnImage`` that names the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise NotAnImage(f"{path} is a folder, not an image file; name the image files in it")
    try:
        with warnings.catch_warnings():
            # a large photo (PIL warns from 89 Mpx) is read; twice that is refused as a decompression bomb, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.draft("RGB", (64, 64))  # a large JPEG is decoded at a fraction of its size: it ends at 32 px
                return _pil_rgb32(img)
    except FileNotFoundError:
        raise NotAnImage(f"{path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "empty file" if path.is_file() and path.stat().st_size == 0 else str(exc).split("\n")[0][:120]
        raise NotAnImage(f"{path} is not a readable image ({reason}); give a PNG, JPEG or another image file") from None


def as_batch(images: Any) -> torch.Tensor:
    """uint8 NCHW at 32 px from CIFAR-shaped arrays ((N, 32, 32, 3), (N, 3, 32, 32) or one image of either) or from
    image files and PIL images of any size or mode (a list of paths or images)."""
    if isinstance(images, (str, Path)) or hasattr(images, "convert"):
        images = [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        x = torch.as_tensor(np.array(images))  # a copy: the caller's array is never written
        if x.dtype != torch.uint8:
            raise InputError(f"images: expected uint8 pixels (0-255) as CIFAR-10 stores them, got {x.dtype}")
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim == 4 and x.shape[1:] == (32, 32, 3):
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1:] != (3, 32, 32):
            raise InputError(
                f"images: expected CIFAR-shaped arrays (N, 32, 32, 3) or (N, 3, 32, 32), got {tuple(x.shape)}; "
                "give other sizes as image files or PIL images"
            )
        return x.contiguous()
    rows = [read_image(item) if isinstance(item, (str, Path)) else _pil_rgb32(item) for item in images]
    if not rows:
        raise InputError("images: none given")
    return torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2).contiguous()


def _pil_rgb32(img: Any) -> np.ndarray:
    """A PIL image as CIFAR-shaped uint8: RGB, then Lanczos (antialiased) to 32 x 32, the one resampling rule."""
    from PIL import Image

    if not hasattr(img, "convert"):
        raise InputError(f"images: expected image files, PIL images or CIFAR-shaped arrays, got {type(img).__name__}")
    return np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.uint8)


@dataclass
class Classifier:
    """A network from images to CIFAR-10's ten classes, with how images become its input.

    >>> clf = embedlab.Classifier.from_run("runs/main", model="finetuned")  # doctest: +SKIP
    >>> clf.predict(["cat.jpg", test_images[:2]])  # doctest: +SKIP
    """

    network: nn.Module  # images (normalised, at inputs.size) -> logits
    inputs: Inputs
    name: Literal["probe", "finetuned"]
    tta_flip: bool = False  # average each image's prediction with its mirror image's, as the run's test did
    tta_shifts: int = 0  # and over the image moved a pixel diagonally, one way or both (recipe.tta_views)
    classes: tuple[str, ...] = CLASSES

    @classmethod
    def from_run(cls, path: str | Path, model: Literal["probe", "finetuned"] = "finetuned") -> Classifier:
        """The linear probe or the fine-tuned network of the finished run folder ``path``, as its test scored it."""
        return cls.from_store(Store.open(Path(path)), model)

    @classmethod
    def from_store(cls, store: Store, model: Literal["probe", "finetuned"] = "finetuned") -> Classifier:
        """See ``from_run``; every read goes through ``store`` and is checked, nothing in the folder changes."""
        if model == "probe":
            return _probe(store)
        if model == "finetuned":
            return _finetuned(store)
        raise InputError(f"model: expected 'probe' or 'finetuned', got {model!r}")

    @classmethod
    def from_probe(cls, backbone: Backbone, probe: nn.Module, size: int) -> Classifier:
        """A probe fitted in Python (``fit_probe(...).model``) on ``backbone``'s features at ``size`` px
        (``extract_features``), with that network in front of it: the same probabilities on the same images.

        >>> clf = embedlab.Classifier.from_probe(net, probe.model, size=64)  # doctest: +SKIP
        """
        network = nn.Sequential(backbone.feature_extractor(), probe)
        return cls(network, Inputs(size, backbone.spec.mean, backbone.spec.std), "probe")

    @torch.no_grad()
    def predict_proba(self, images: Any) -> np.ndarray:
        """(N, 10) class probabilities of ``images`` (see ``as_batch``)."""
        x = as_batch(images)
        mean, std = torch.tensor(self.inputs.mean), torch.tensor(self.inputs.std)
        self.network.eval()
        out = []
        for i in range(0, len(x), BATCH):
            views = tta_views(x[i : i + BATCH], Views(self.tta_flip, self.tta_shifts))
            probs = [self.network(preprocess(view, self.inputs.size, mean, std)).softmax(1) for _, view in views]
            out.append(probs[0] if len(probs) == 1 else torch.stack(probs).mean(0))
        return torch.cat(out).numpy()

    def predict(self, images: Any) -> list[str]:
        """The most probable class name of each image."""
        return [self.classes[i] for i in self.predict_proba(images).argmax(1)]

    def top(self, images: Any, k: int = 3) -> list[list[tuple[str, float]]]:
        """Each image's ``k`` most probable classes with their probabilities, most probable first."""
        probs = self.predict_proba(images)
        return [[(self.classes[j], float(row[j])) for j in np.argsort(-row, kind="stable")[:k]] for row in probs]


def _state(store: Store, name: str, keys: Iterable[str], what: str) -> dict[str, Any]:
    state = store.weights(name, what)
    if missing := [k for k in keys if k not in state]:
        raise InputError(
            f"{store.path}/artefacts/{name} is not the {what} embedlab saved (it lacks {', '.join(missing)}); it was "
            "replaced. Run that step again in a new folder"
        )
    return state


def _probe(store: Store) -> Classifier:
    state = _state(store, "probe_model.pt", ("linear.weight", "linear.bias", "mu", "sigma"), "linear probe")
    cfg = store.typed_config(ProbeConfig, "probe")
    size = _resolved(store, "probe", "size", 16, 1024)
    backbone = create_backbone(cfg.backbone, cfg.weights, cfg.seed)
    probe = LogisticRegression(backbone.spec.feature_dim, len(CLASSES))
    _load(probe, state, store, "probe_model.pt")
    network = nn.Sequential(backbone.feature_extractor(), probe)
    return Classifier(network, Inputs(size, backbone.spec.mean, backbone.spec.std), "probe")


def _finetuned(store: Store) -> Classifier:
    state = _state(store, "finetune_checkpoint.pt", ("model", "epoch"), "fine-tuned model")
    cfg = store.typed_config(FinetuneConfig, "finetune")
    frozen = _resolved(store, "finetune", "freeze_stages", 0, 16)
    if state["epoch"] != passes(cfg.epochs):
        raise InputError(
            f"{store.path}: fine-tuning stopped after epoch {state['epoch']} of {passes(cfg.epochs)}; finish it with "
            f"embedlab run --resume {store.path}, or use --model probe"
        )
    backbone = create_backbone(cfg.backbone, "none", cfg.seed)  # every weight comes from the checkpoint
    network, _, _ = backbone.with_new_head(len(CLASSES), cfg.train_scope, frozen)
    weights = state["model"]
    if cfg.ema and isinstance(state.get("ema"), dict):  # the run evaluated the average
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    _load(network, weights, store, "finetune_checkpoint.pt")
    size = cfg.test_size or _resolved(store, "finetune", "size", 16, 1024)
    # a run from before shifted views existed tested without them
    shifts = cfg.tta_shifts if "tta_shifts" in store.config("finetune") else 0
    inputs = Inputs(size, backbone.spec.mean, backbone.spec.std)
    return Classifier(network, inputs, "finetuned", tta_flip=cfg.tta_flip, tta_shifts=shifts)


def _resolved(store: Store, section: str, key: str, low: int, high: int) -> int:
    """A whole number the run resolved when it ran (config.json's ``resolved`` part of ``section``), checked."""
    resolved = store.config(section).get(DERIVED)
    value = resolved.get(key) if isinstance(resolved, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(
            f"{store.path}/config.json: the {section} section's resolved {key} is {value!r}; it was edited"
        )
    return value


def _load(module: nn.Module, state: dict[str, Any], store: Store, name: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().split("\n")[0][:160]
        raise InputError(f"{store.path}/artefacts/{name} does not fit the run's network ({first})") from None


def top_lines(classifiers: Sequence[Classifier], image: Any, k: int = 3) -> list[str]:
    """``embedlab predict``'s lines for one image: each model's ``k`` best classes with their probabilities."""
    width = max(len(c.name) for c in classifiers)
    lines = []
    for clf in classifiers:
        best = clf.top(image, k)[0]
        lines.append(f"  {clf.name + ':':<{width + 1}} " + ", ".join(f"{name} {p * 100:.1f} %" for name, p in best))
    return lines
