"""Part 1 A and B as steps: the run's settings resolved, frozen features (cached), the probe's fit, the galleries; and
the output builders fine-tuning shares (evaluation tables, gallery, explorer images). Each step returns what it
produced; none takes a run folder."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from embedlab.config import FinetuneConfig, ProbeConfig
from embedlab.data import resolve_data_dir
from embedlab.files import npz_bytes, torch_bytes
from embedlab.overrides import DERIVED, to_dict
from embedlab.results import Evaluation, FeatureSummary, FinetuneResult, ProbeResult, ProbeScores
from embedlab.store import LP_FT_PROBE, Output, Predictions, Table, Weights
from embedlab.text import percent
from embedlab.vision import figures, runtime
from embedlab.vision.backbones import Backbone, create_backbone
from embedlab.vision.cifar10 import (
    CLASSES,
    Cifar10,
    ensure_cifar10,
    load_cifar10,
    stratified_split,
    subsample,
    torchvision_download,
)
from embedlab.vision.evaluate import confusion_cells, confusion_matrix, gallery_selection, per_class_accuracy
from embedlab.vision.features import (
    EXTRACT_BATCH_GPU,
    cache_key,
    cached_features,
    cached_stats,
    check_batch_fits,
    default_cache_dir,
    extract,
    inference_batch,
    numerics,
    pick_device,
    usable_cache_dir,
)
from embedlab.vision.finetune import Inputs
from embedlab.vision.probe import accuracy, choose_l2, fit_probe, predict_proba
from embedlab.vision.registry import BackboneChoice, BackboneSpec, choose_backbone
from embedlab.vision.timing import measure_throughput

log = logging.getLogger(__name__).info


def resolve_size(cfg: ProbeConfig | FinetuneConfig, native: int, device: torch.device) -> int:
    """The working resolution: explicit --size, else native on a GPU, else the CPU default."""
    if cfg.size is not None:
        return cfg.size
    return native if device.type == "cuda" else cfg.cpu_size


def load_splits(cfg: ProbeConfig | FinetuneConfig) -> tuple[Cifar10, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 (verified) and the seeded train / validation / test indices shared by the probe and fine-tuning."""
    folder = ensure_cifar10(resolve_data_dir(cfg.data_dir), None if cfg.offline else torchvision_download)
    files = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file())
    data = _verified_cifar10(folder, files)
    train_idx, val_idx = stratified_split(data.train_y, cfg.val_per_class, cfg.seed)
    train_idx = subsample(data.train_y, train_idx, cfg.train_per_class, cfg.seed)
    test_idx = subsample(data.test_y, torch.arange(len(data.test_y)), cfg.test_per_class, cfg.seed)
    return data, train_idx, val_idx, test_idx


@functools.lru_cache(maxsize=1)
def _verified_cifar10(folder: Path, files: tuple[tuple[str, int, int], ...]) -> Cifar10:
    """CIFAR-10 read and verified once per process while its ``files`` (name, size, mtime) stay the same: the probe and
    fine-tuning of one study share it."""
    log(f"[data] reading and verifying {folder}")
    return load_cifar10(folder)


def gallery_output(
    owner: type, name: str, probs: torch.Tensor, data: Cifar10, indices: torch.Tensor, k: int, title: str
) -> Output:
    """The per-class gallery of the test images ``indices`` (figure) and its table of their indices and
    probabilities."""
    labels, images = data.test_y[indices], data.test_x[indices]
    sel = gallery_selection(probs, labels, k)
    fig = figures.gallery(images, sel, CLASSES, k, title)
    table = sel.assign(
        test_index=indices.numpy()[sel["index"].to_numpy()],
        true_label=[CLASSES[c] for c in sel["true"]],
        pred_label=[CLASSES[c] for c in sel["pred"]],
    )
    return Output(
        owner=owner,
        tables={name: Table(table[["true_label", "kind", "rank", "test_index", "pred_label", "prob"]])},
        figures={name: fig},
    )


def view_images(probs: torch.Tensor, data: Cifar10, indices: torch.Tensor) -> bytes:
    """The test images the report's explorer shows for one model (every mistake and the ends of each diagonal cell, see
    ``confusion_cells``), uint8 with their test indices, as ``<model>_view_images.npz``."""
    index = indices.numpy()
    rows = np.unique(np.concatenate(list(confusion_cells(probs.numpy(), data.test_y[indices].numpy(), index).values())))
    return npz_bytes(test_index=index[rows], images=data.test_x[indices[rows]].numpy())


def evaluation_output(prefix: str, probs: torch.Tensor, labels: torch.Tensor, title: str) -> tuple[Evaluation, Output]:
    """Accuracy, per-class accuracy (table) and the confusion matrix (figure + table) of one model."""
    pred = probs.argmax(1)
    pca = per_class_accuracy(pred, labels)
    cm = confusion_matrix(pred, labels)
    tables = {
        f"{prefix}_per_class": Table(pd.DataFrame({"class": CLASSES, "accuracy": pca.numpy().round(4)})),
        f"{prefix}_confusion": Table(
            pd.DataFrame(cm.numpy(), columns=CLASSES).assign(true=CLASSES)[["true", *CLASSES]]
        ),
    }
    out = Output(
        owner=ProbeResult if prefix == "probe" else FinetuneResult,
        tables=tables,
        figures={f"{prefix}_confusion": figures.confusion(cm, CLASSES, title)},
    )
    return Evaluation(accuracy(probs, labels), dict(zip(CLASSES, pca.tolist()))), out


def merged(*outs: Output) -> Output:
    """One output of several (the same owner or results; later names win)."""
    return Output(
        results=tuple(r for o in outs for r in o.results),
        owner=next((o.owner for o in outs if o.owner), None),
        tables={k: v for o in outs for k, v in o.tables.items()},
        figures={k: v for o in outs for k, v in o.figures.items()},
        artefacts={k: v for o in outs for k, v in o.artefacts.items()},
    )


@dataclass
class ProbeSetup:
    """The probe's settings as they will run: device, backbone (chosen once), resolution and inference batch."""

    device: torch.device
    choice: BackboneChoice
    backbone: Backbone
    size: int
    batch: int
    runtime: str  # what runs the extraction (runtime.choose)

    def settings(self, cfg: ProbeConfig) -> dict[str, Any]:
        """config.json's probe section: the backbone that ran, so --config and --resume repeat it, and what was
        resolved."""
        return {
            **to_dict(cfg),
            "backbone": self.choice.name,
            DERIVED: {"device": str(self.device), "size": self.size, "batch_size": self.batch, "runtime": self.runtime},
        }


def probe_setup(cfg: ProbeConfig, choice: BackboneChoice | None = None) -> ProbeSetup:
    """Device, backbone (``choice``, else chosen here), resolution and batch of the probe, each checked before any
    work."""
    device = pick_device(cfg.device)
    choice = choice or choose_backbone(cfg.backbone, cfg.weights, cfg.offline)
    backbone = create_backbone(choice.name, cfg.weights, cfg.seed)
    size = resolve_size(cfg, backbone.spec.native_size, device)
    batch = inference_batch(cfg.batch_size, device, EXTRACT_BATCH_GPU)
    check_batch_fits("--batch-size", batch, size, "inference", device)
    return ProbeSetup(device, choice, backbone, size, batch, runtime.choose(cfg.runtime, device))


@dataclass
class ProbeFeatures:
    """What 1A's extraction produces: the frozen features of train + validation and test, and their labels and
    indices."""

    spec: BackboneSpec
    data: Cifar10
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    fit_idx: torch.Tensor  # train + validation, sorted: the rows of ``fit_feats``
    fit_feats: torch.Tensor
    test_feats: torch.Tensor
    summary: FeatureSummary
    out: Output  # the cache files the features came from

    def rows_of(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows of ``fit_feats`` holding the images ``idx``."""
        pos = {int(i): p for p, i in enumerate(self.fit_idx)}
        return torch.tensor([pos[int(i)] for i in idx])


def feature_keys(setup: ProbeSetup, fit_idx: torch.Tensor | None, test_idx: torch.Tensor | None) -> dict[str, str]:
    """The feature cache's key of the train (+ validation) and the test images: the backbone, its weights, the
    resolution, the images (None: the whole split) and the numerics they are computed in."""
    backbone, numbers = setup.backbone, numerics(setup.device, setup.runtime)
    return {
        split: cache_key(backbone.spec.name, backbone.weights_digest, setup.size, split, idx, numbers)
        for split, idx in (("train", fit_idx), ("test", test_idx))
    }


def feature_summary(
    setup: ProbeSetup, split: tuple[torch.Tensor, ...], cached: bool, extract_stats: dict[str, float]
) -> FeatureSummary:
    """1A's features as metrics.json describes them: the network, its input, the split and the extraction's speed."""
    backbone, (train_idx, val_idx, test_idx) = setup.backbone, split
    return FeatureSummary(
        backbone=backbone.spec.name,
        weights=backbone.weights,
        weights_digest=backbone.weights_digest,
        resolution=setup.size,
        device=str(setup.device),
        feature_dim=backbone.spec.feature_dim,
        mean=list(backbone.spec.mean),
        std=list(backbone.spec.std),
        train_images=len(train_idx),
        val_images=len(val_idx),
        test_images=len(test_idx),
        features_cached=cached,
        backbone_choice=setup.choice.reason,
        runtime=setup.runtime,
        **extract_stats,
    )


def step_1a_features(cfg: ProbeConfig, setup: ProbeSetup) -> ProbeFeatures:
    """1A, first half: frozen features of every image the probe needs, from the cache when they were computed before."""
    device, backbone, size, batch = setup.device, setup.backbone, setup.size, setup.batch
    spec = backbone.spec
    data, train_idx, val_idx, test_idx = load_splits(cfg)
    fit_idx = torch.sort(torch.cat([train_idx, val_idx])).values  # every image features are needed for
    model = backbone.feature_extractor()
    cache_dir = usable_cache_dir(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())
    keys = feature_keys(
        setup, fit_idx if len(fit_idx) < len(data.train_y) else None, None if cfg.test_per_class is None else test_idx
    )
    missing = [s for s, k in keys.items() if not (cache_dir / "features" / k).is_file()]
    extract_stats: dict[str, float] = {}  # FeatureSummary's extract_* timings
    engine = None
    if missing:
        engine = runtime.engine(setup.runtime, model, size, device)
        n_todo = (len(fit_idx) if "train" in missing else 0) + (len(test_idx) if "test" in missing else 0)
        # timed for about 1 % of the extraction (3 s for 60,000 images): the rate over seconds, not a few batches
        inputs = Inputs(size, spec.mean, spec.std)
        ips = measure_throughput(model, data.test_x, inputs, batch, device, engine, seconds=min(3.0, n_todo / 2e4))
        log(
            f"[1A] {spec.name} ({backbone.weights}) on {device} ({setup.runtime}) at {size} px: about {ips:.0f} img/s, "
            f"so extracting {n_todo:,} images takes about {n_todo / ips / 60:.1f} min"
        )

    computed: list[str] = []
    listing: list[str] = []

    def features_of(split: str, images: torch.Tensor) -> torch.Tensor:
        feats, stats, path = cached_features(
            cache_dir,
            keys[split],
            lambda: extract(
                model, images, Inputs(size, spec.mean, spec.std), batch, device, f"{split} features", engine
            ),
        )
        if stats is not None:
            computed.append(split)
        stats = stats or cached_stats(path)
        if stats is not None:
            extract_stats[f"extract_{split}_images_per_second"] = stats.images_per_second
            extract_stats[f"extract_{split}_seconds"] = stats.seconds
        listing.append(f"{split}: {path}\n")
        return feats

    train_feats_all = features_of("train", data.train_x[fit_idx])
    test_feats = features_of("test", data.test_x[test_idx])
    summary = feature_summary(setup, (train_idx, val_idx, test_idx), not computed, extract_stats)
    out = Output(owner=ProbeResult, artefacts={"feature_cache.txt": "".join(listing)})
    return ProbeFeatures(spec, data, train_idx, val_idx, test_idx, fit_idx, train_feats_all, test_feats, summary, out)


@dataclass
class ProbeFitted:
    """1A's fit: its scores, the test probabilities, and its output (tables, figures, the two probes' weights)."""

    scores: ProbeScores
    test_probs: torch.Tensor
    lp_ft_state: dict[str, torch.Tensor]  # the probe fitted on the training split alone: LP-FT's start
    out: Output


def step_1a_fit(cfg: ProbeConfig, f: ProbeFeatures) -> ProbeFitted:
    """1A, second half: L2 chosen on the validation split, refit on train + validation, test evaluation."""
    log(f"[1A] choosing L2 on the validation split from {cfg.l2_grid}")
    t0 = time.perf_counter()
    fy = f.data.train_y[f.fit_idx]
    tr, va = f.rows_of(f.train_idx), f.rows_of(f.val_idx)
    l2, rows, chosen_model = choose_l2(f.fit_feats[tr], fy[tr], f.fit_feats[va], fy[va], cfg.l2_grid, cfg.max_iter)
    rows_df = pd.DataFrame(rows)
    final = fit_probe(f.fit_feats, fy, l2, cfg.max_iter, init=chosen_model)  # refit on train + validation, warm-started
    fit_s = time.perf_counter() - t0
    test_y = f.data.test_y[f.test_idx]
    test_probs = predict_proba(final.model, f.test_feats)
    chosen = next(r for r in rows if r["l2"] == l2)
    ev, ev_out = evaluation_output("probe", test_probs, test_y, f"Linear probe on {f.spec.name} features — test set")
    fit = ProbeScores(
        l2=l2,
        train_accuracy=accuracy(predict_proba(final.model, f.fit_feats), fy),
        val_accuracy=chosen["val_acc"],
        evaluation=ev,
        fit_seconds=round(fit_s, 2),
        trainable_parameters=sum(p.numel() for p in final.model.linear.parameters()),
        probe_iterations=len(final.losses),
    )
    lp_ft_state = chosen_model.state_dict()  # LP-FT's start: no validation label seen
    out = merged(
        Output(
            owner=ProbeResult,
            tables={"probe_l2_grid": Table(rows_df)},
            figures={
                "probe_l2_grid": figures.l2_choice(rows_df, l2),
                "probe_training_curve": figures.curve(
                    final.losses,
                    "L-BFGS function evaluation",
                    "regularised cross-entropy",
                    "Probe training curve (train + validation, chosen L2)",
                    log_scale=True,
                ),
            },
            artefacts={
                "probe_test_probs.npz": Predictions(test_probs, test_y, f.test_idx.numpy(), "the probe's predictions"),
                "probe_model.pt": torch_bytes(final.model.state_dict()),
                LP_FT_PROBE: Weights(lp_ft_state),
            },
        ),
        ev_out,
    )
    log(
        f"[1A] L2 = {l2:g}: train {percent(fit.train_accuracy)}, val {percent(fit.val_accuracy)}, test"
        f" {percent(ev.test_accuracy)}"
    )
    return ProbeFitted(fit, test_probs, lp_ft_state, out)


def step_1b_gallery(cfg: ProbeConfig, f: ProbeFeatures, test_probs: torch.Tensor) -> Output:
    """1B: the most confident correct and incorrect test predictions per class, in one figure, and the explorer's
    images."""
    gallery = gallery_output(
        ProbeResult,
        "probe_gallery",
        test_probs,
        f.data,
        f.test_idx,
        cfg.gallery_k,
        f"Linear probe on frozen {f.spec.name} features: most confident correct and incorrect test predictions per"
        " class",
    )
    return merged(
        gallery,
        Output(owner=ProbeResult, artefacts={"probe_view_images.npz": view_images(test_probs, f.data, f.test_idx)}),
    )
