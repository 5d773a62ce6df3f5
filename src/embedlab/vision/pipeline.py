"""The linear-probe study end to end: CIFAR-10 -> frozen features (cached) -> L2 on val -> test once -> figures."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedlab.config import ProbeConfig, to_dict
from embedlab.data import resolve_data_dir
from embedlab.runs import RunDir
from embedlab.vision import figures
from embedlab.vision.backbones import create_backbone
from embedlab.vision.cifar10 import CLASSES, ensure_cifar10, load_cifar10, stratified_split, subsample, torchvision_download
from embedlab.vision.evaluate import confusion_matrix, gallery_selection, per_class_accuracy
from embedlab.vision.features import cache_key, cached_features, default_cache_dir, extract, pick_device
from embedlab.vision.probe import accuracy, choose_l2, fit_probe, predict_proba

Log = Callable[[str], None]


def resolve_size(cfg: ProbeConfig, native: int, device: torch.device) -> int:
    """The working resolution: explicit --size, else native on a GPU, else the CPU default."""
    if cfg.size is not None:
        return cfg.size
    return native if device.type == "cuda" else cfg.cpu_size


def measure_throughput(model: torch.nn.Module, images: torch.Tensor, size: int, mean, std, batch: int, device) -> float:
    """Images/s on one warm batch: the basis of the printed time estimate."""
    sample = images[: min(batch, len(images))]
    extract(model, sample[: max(1, len(sample) // 4)], size, mean, std, batch, device, desc="warm-up")
    _, stats = extract(model, sample, size, mean, std, batch, device, desc="timing")
    return stats.images_per_second


def save_gallery(run: RunDir, name: str, probs: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                 indices: torch.Tensor, k: int, title: str) -> pd.DataFrame:
    """Select, draw and save the per-class gallery; its CSV holds test-set indices and probabilities."""
    sel = gallery_selection(probs, labels, k)
    fig = figures.gallery(images, sel, CLASSES, k, title)
    run.save_figure(name, fig, dpi=150)
    table = sel.assign(test_index=indices.numpy()[sel["index"].to_numpy()], true_label=[CLASSES[c] for c in sel["true"]],
                       pred_label=[CLASSES[c] for c in sel["pred"]])
    run.save_table(name, table[["true_label", "kind", "rank", "test_index", "pred_label", "prob"]])
    return sel


def evaluation_tables(run: RunDir, prefix: str, probs: torch.Tensor, labels: torch.Tensor, title: str) -> dict[str, object]:
    """Accuracy, per-class accuracy (table) and the confusion matrix (figure + table) of one model."""
    pred = probs.argmax(1)
    pca = per_class_accuracy(pred, labels)
    cm = confusion_matrix(pred, labels)
    run.save_table(f"{prefix}_per_class", pd.DataFrame({"class": CLASSES, "accuracy": pca.numpy().round(4)}))
    run.save_table(f"{prefix}_confusion", pd.DataFrame(cm.numpy(), columns=CLASSES).assign(true=CLASSES)[["true", *CLASSES]])
    run.save_figure(f"{prefix}_confusion", figures.confusion(cm, CLASSES, title))
    return {"test_accuracy": accuracy(probs, labels), "per_class_accuracy": dict(zip(CLASSES, pca.tolist()))}


def run_probe(cfg: ProbeConfig, run: RunDir, log: Log = print) -> dict[str, object]:
    """Part 1 A and B into ``run``; returns metrics.json."""
    cfg.validate()
    t_all = time.perf_counter()
    device = pick_device(cfg.device)
    backbone = create_backbone(cfg.backbone, cfg.weights, cfg.seed)
    spec = backbone.spec
    size = resolve_size(cfg, spec.native_size, device)
    run.write_json("config.json", {"study": "probe", "probe": to_dict(cfg), "resolved": {"device": str(device), "size": size}})

    folder = ensure_cifar10(resolve_data_dir(cfg.data_dir), None if cfg.offline else torchvision_download)
    log(f"[1A] reading and verifying {folder}")
    data = load_cifar10(folder)
    train_idx, val_idx = stratified_split(data.train_y, cfg.val_per_class, cfg.seed)
    train_idx = subsample(data.train_y, train_idx, cfg.train_per_class, cfg.seed)
    test_idx = subsample(data.test_y, torch.arange(len(data.test_y)), cfg.test_per_class, cfg.seed)
    fit_idx = torch.sort(torch.cat([train_idx, val_idx])).values  # every image features are needed for

    model = backbone.feature_extractor()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    full_train = len(fit_idx) == len(data.train_y)
    keys = {"train": cache_key(spec.name, backbone.weights_digest, size, "train", None if full_train else fit_idx),
            "test": cache_key(spec.name, backbone.weights_digest, size, "test", None if cfg.test_per_class is None else test_idx)}
    missing = [s for s, k in keys.items() if not (cache_dir / "features" / k).is_file()]
    extract_stats: dict[str, float] = {}
    if missing:
        n_todo = (len(fit_idx) if "train" in missing else 0) + (len(test_idx) if "test" in missing else 0)
        ips = measure_throughput(model, data.test_x, size, spec.mean, spec.std, cfg.batch_size, device)
        log(f"[1A] {spec.name} ({backbone.weights}) on {device} at {size} px: about {ips:.0f} img/s, "
            f"so extracting {n_todo:,} images takes about {n_todo / ips / 60:.1f} min")

    def features_of(split: str, images: torch.Tensor) -> torch.Tensor:
        feats, stats, path = cached_features(
            cache_dir, keys[split],
            lambda: extract(model, images, size, spec.mean, spec.std, cfg.batch_size, device, desc=f"{split} features"))
        if stats is not None:
            extract_stats[f"{split}_images_per_second"] = stats.images_per_second
            extract_stats[f"{split}_seconds"] = stats.seconds
        (run.path / "artefacts" / "feature_cache.txt").open("a").write(f"{split}: {path}\n")
        return feats

    train_feats_all = features_of("train", data.train_x[fit_idx])
    pos = {int(i): p for p, i in enumerate(fit_idx)}
    tr = torch.tensor([pos[int(i)] for i in train_idx])
    va = torch.tensor([pos[int(i)] for i in val_idx])
    test_feats = features_of("test", data.test_x[test_idx])
    test_y = data.test_y[test_idx]
    run.update_metrics("probe", {"backbone": spec.name, "weights": backbone.weights, "weights_digest": backbone.weights_digest,
                                 "resolution": size, "device": str(device), "feature_dim": spec.feature_dim,
                                 "mean": list(spec.mean), "std": list(spec.std),
                                 "train_images": len(train_idx), "val_images": len(val_idx), "test_images": len(test_idx),
                                 "features_cached": not missing, **extract_stats})

    log(f"[1A] choosing L2 on the validation split from {cfg.l2_grid}")
    t0 = time.perf_counter()
    fy = data.train_y[fit_idx]
    l2, rows, chosen_model = choose_l2(train_feats_all[tr], fy[tr], train_feats_all[va], fy[va], cfg.l2_grid, cfg.max_iter)
    rows_df = pd.DataFrame(rows)
    run.save_table("probe_l2_grid", rows_df)
    run.save_figure("probe_l2_grid", figures.l2_choice(rows_df, l2))
    final = fit_probe(train_feats_all, fy, l2, cfg.max_iter, init=chosen_model)  # refit on train + validation, warm-started
    fit_s = time.perf_counter() - t0
    run.save_figure("probe_training_curve", figures.curve(final.losses, "L-BFGS function evaluation", "regularised cross-entropy",
                                                          "Probe training curve (train + validation, chosen L2)", log=True))
    test_probs = predict_proba(final.model, test_feats)
    np.savez_compressed(run.artefact("probe_test_probs.npz"), probs=test_probs.numpy(), labels=test_y.numpy(), test_index=test_idx.numpy())
    torch.save(final.model.state_dict(), run.artefact("probe_model.pt"))
    chosen = next(r for r in rows if r["l2"] == l2)
    ev = evaluation_tables(run, "probe", test_probs, test_y, f"Linear probe on {spec.name} features — test set")
    metrics = {
        "l2": l2, "train_accuracy": accuracy(predict_proba(final.model, train_feats_all), fy),
        "val_accuracy": chosen["val_acc"], **ev, "fit_seconds": round(fit_s, 2),
        "trainable_parameters": sum(p.numel() for p in final.model.linear.parameters()),
        "probe_iterations": len(final.losses),
    }
    run.update_metrics("probe", metrics)
    log(f"[1A] L2 = {l2:g}: train {metrics['train_accuracy']:.4f}, val {metrics['val_accuracy']:.4f}, test {metrics['test_accuracy']:.4f}")

    save_gallery(run, "probe_gallery", test_probs, test_y, data.test_x[test_idx], test_idx, cfg.gallery_k,
                 f"Linear probe on frozen {spec.name} features: most confident correct and incorrect test predictions per class")
    log("[1B] gallery saved")
    run.update_metrics("probe", {"total_seconds": round(time.perf_counter() - t_all, 1)})
    return run.read_json("metrics.json")
