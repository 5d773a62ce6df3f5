"""The linear-probe study end to end: CIFAR-10 -> frozen features (cached) -> L2 on val -> test once -> figures."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedlab.config import FinetuneConfig, ProbeConfig, to_dict
from embedlab.data import resolve_data_dir
from embedlab.distributed import current
from embedlab.errors import InputError, MissingFileError
from embedlab.files import UnreadableFile, npz_bytes, read_torch, torch_bytes
from embedlab.results import Comparison, Evaluation, FeatureSummary, FinetuneResult, ProbeResult, ProbeScores, load, save
from embedlab.runs import RunDir
from embedlab.vision import figures
from embedlab.vision.backbones import Backbone, BackboneSpec, check_freeze_stages, choose_backbone, create_backbone
from embedlab.vision.cifar10 import CLASSES, Cifar10, ensure_cifar10, load_cifar10, stratified_split, subsample, torchvision_download
from embedlab.vision.evaluate import confusion_cells, confusion_matrix, gallery_selection, paired_changes, per_class_accuracy
from embedlab.vision.features import (EXTRACT_BATCH_GPU, check_batch_fits, usable_cache_dir, cache_key, cached_features, cached_stats, default_cache_dir, extract,
                                     inference_batch, numerics, pick_device, uses_bf16)
from embedlab.vision.compare import comparison_table, per_class_table
from embedlab.vision.finetune import EVAL_BATCH_GPU, History, Inputs, Job, check_shards, predict, train, train_pixels
from embedlab.vision.probe import accuracy, choose_l2, fit_probe, folded_linear, predict_proba

log = logging.getLogger(__name__).info


#: The probe fitted on the training split alone: what LP-FT starts the fine-tuned head from.
LP_FT_PROBE = "probe_model_train_only.pt"


def resolve_size(cfg: ProbeConfig | FinetuneConfig, native: int, device: torch.device) -> int:
    """The working resolution: explicit --size, else native on a GPU, else the CPU default."""
    if cfg.size is not None:
        return cfg.size
    return native if device.type == "cuda" else cfg.cpu_size


def resolve_freeze_stages(cfg: FinetuneConfig, spec: BackboneSpec, device: torch.device) -> int:
    """Explicit --freeze-stages, else none on a GPU or with --train-scope last, else the backbone's CPU default."""
    if cfg.freeze_stages is not None:
        return cfg.freeze_stages
    return 0 if device.type == "cuda" or cfg.train_scope != "all" else spec.cpu_freeze_stages


def load_splits(cfg: ProbeConfig | FinetuneConfig) -> tuple[Cifar10, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 (verified) and the seeded train / validation / test indices shared by the probe and fine-tuning."""
    folder = ensure_cifar10(resolve_data_dir(cfg.data_dir), None if cfg.offline else torchvision_download)
    log(f"[1A] reading and verifying {folder}")
    data = load_cifar10(folder)
    train_idx, val_idx = stratified_split(data.train_y, cfg.val_per_class, cfg.seed)
    train_idx = subsample(data.train_y, train_idx, cfg.train_per_class, cfg.seed)
    test_idx = subsample(data.test_y, torch.arange(len(data.test_y)), cfg.test_per_class, cfg.seed)
    return data, train_idx, val_idx, test_idx


def measure_throughput(model: torch.nn.Module, images: torch.Tensor, inputs: Inputs, batch: int, device: torch.device,
                       timed: int = 5) -> float:
    """Images/s of extraction, the basis of the printed time estimate: the median of ``timed`` batches after two
    warm-up batches (the first batches run slower while the kernels and caches warm up, so one batch alone
    underestimates the rate)."""
    warm = images[: 2 * batch]
    extract(model, warm, inputs, batch, device, desc="warm-up")
    rates = []
    for i in range(timed):
        sample = images[(2 + i) * batch : (3 + i) * batch]
        if len(sample):
            rates.append(extract(model, sample, inputs, batch, device, desc="timing")[1].images_per_second)
    return float(np.median(rates)) if rates else extract(model, warm, inputs, batch, device, desc="timing")[1].images_per_second


def save_gallery(run: RunDir, name: str, probs: torch.Tensor, data: Cifar10, indices: torch.Tensor, k: int, title: str) -> pd.DataFrame:
    """Select, draw and save the per-class gallery of the test images ``indices``; its CSV holds their indices and probabilities."""
    labels, images = data.test_y[indices], data.test_x[indices]
    sel = gallery_selection(probs, labels, k)
    fig = figures.gallery(images, sel, CLASSES, k, title)
    run.save_figure(name, fig, dpi=150)
    table = sel.assign(test_index=indices.numpy()[sel["index"].to_numpy()], true_label=[CLASSES[c] for c in sel["true"]],
                       pred_label=[CLASSES[c] for c in sel["pred"]])
    run.save_table(name, table[["true_label", "kind", "rank", "test_index", "pred_label", "prob"]])
    return sel


def save_view_images(run: RunDir, name: str, probs: torch.Tensor, data: Cifar10, indices: torch.Tensor) -> int:
    """``artefacts/<name>_view_images.npz``: the test images the report's explorer shows for this model (every mistake
    and the ends of each diagonal cell, see ``confusion_cells``), uint8 with their test indices; returns how many."""
    index = indices.numpy()
    rows = np.unique(np.concatenate(list(confusion_cells(probs.numpy(), data.test_y[indices].numpy(), index).values())))
    run.save_artefact(f"{name}_view_images.npz", npz_bytes(test_index=index[rows], images=data.test_x[indices[rows]].numpy()))
    return len(rows)


def evaluation_tables(run: RunDir, prefix: str, probs: torch.Tensor, labels: torch.Tensor, title: str) -> Evaluation:
    """Accuracy, per-class accuracy (table) and the confusion matrix (figure + table) of one model."""
    pred = probs.argmax(1)
    pca = per_class_accuracy(pred, labels)
    cm = confusion_matrix(pred, labels)
    run.save_table(f"{prefix}_per_class", pd.DataFrame({"class": CLASSES, "accuracy": pca.numpy().round(4)}))
    run.save_table(f"{prefix}_confusion", pd.DataFrame(cm.numpy(), columns=CLASSES).assign(true=CLASSES)[["true", *CLASSES]])
    run.save_figure(f"{prefix}_confusion", figures.confusion(cm, CLASSES, title))
    return Evaluation(accuracy(probs, labels), dict(zip(CLASSES, pca.tolist())))


@dataclass
class ProbeFeatures:
    """What 1A's extraction produces: the frozen features of train + validation and test, and their labels and indices."""

    spec: object  # backbones.BackboneSpec
    data: Cifar10
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    fit_idx: torch.Tensor  # train + validation, sorted: the rows of ``fit_feats``
    fit_feats: torch.Tensor
    test_feats: torch.Tensor
    summary: FeatureSummary

    def rows_of(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows of ``fit_feats`` holding the images ``idx``."""
        pos = {int(i): p for p, i in enumerate(self.fit_idx)}
        return torch.tensor([pos[int(i)] for i in idx])


def run_probe(cfg: ProbeConfig, run: RunDir) -> ProbeResult:
    """Part 1 A and B into ``run``; its result is saved in metrics.json too."""
    cfg.validate()
    t_all = time.perf_counter()
    feats = step_1a_features(cfg, run)
    fit, test_probs = step_1a_fit(cfg, run, feats)
    step_1b_gallery(cfg, run, feats, test_probs)
    result = ProbeResult(feats.summary, fit, round(time.perf_counter() - t_all, 1))
    save(run, result)
    return result


def step_1a_features(cfg: ProbeConfig, run: RunDir) -> ProbeFeatures:
    """1A, first half: frozen features of every image the probe needs, from the cache when they were computed before."""
    device = pick_device(cfg.device)
    choice = choose_backbone(cfg.backbone, cfg.weights, cfg.offline)
    backbone = create_backbone(choice.name, cfg.weights, cfg.seed)
    spec = backbone.spec
    size = resolve_size(cfg, spec.native_size, device)
    batch = inference_batch(cfg.batch_size, device, EXTRACT_BATCH_GPU)
    check_batch_fits("--batch-size", batch, size, "inference", device)
    # config.json names the backbone that ran, so --config and --resume repeat it; metrics.json says why auto chose it
    run.update_config("probe", {**to_dict(cfg), "backbone": choice.name,
                                "resolved": {"device": str(device), "size": size, "batch_size": batch}})

    data, train_idx, val_idx, test_idx = load_splits(cfg)
    fit_idx = torch.sort(torch.cat([train_idx, val_idx])).values  # every image features are needed for
    model = backbone.feature_extractor()
    cache_dir = usable_cache_dir(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())
    full_train = len(fit_idx) == len(data.train_y)
    keys = {"train": cache_key(spec.name, backbone.weights_digest, size, "train", None if full_train else fit_idx, numerics(device)),
            "test": cache_key(spec.name, backbone.weights_digest, size, "test", None if cfg.test_per_class is None else test_idx,
                              numerics(device))}
    missing = [s for s, k in keys.items() if not (cache_dir / "features" / k).is_file()]
    extract_stats: dict[str, float] = {}  # FeatureSummary's extract_* timings
    if missing:
        n_todo = (len(fit_idx) if "train" in missing else 0) + (len(test_idx) if "test" in missing else 0)
        ips = measure_throughput(model, data.test_x, Inputs(size, spec.mean, spec.std), batch, device)
        log(f"[1A] {spec.name} ({backbone.weights}) on {device} at {size} px: about {ips:.0f} img/s, "
            f"so extracting {n_todo:,} images takes about {n_todo / ips / 60:.1f} min")

    computed: list[str] = []

    def features_of(split: str, images: torch.Tensor) -> torch.Tensor:
        feats, stats, path = cached_features(
            cache_dir, keys[split],
            lambda: extract(model, images, Inputs(size, spec.mean, spec.std), batch, device, desc=f"{split} features"))
        if stats is not None:
            computed.append(split)
        stats = stats or cached_stats(path)
        if stats is not None:
            extract_stats[f"extract_{split}_images_per_second"] = stats.images_per_second
            extract_stats[f"extract_{split}_seconds"] = stats.seconds
        listing = run.artefact("feature_cache.txt")
        run.save_artefact(listing.name, (listing.read_text() if listing.is_file() else "") + f"{split}: {path}\n")
        return feats

    train_feats_all = features_of("train", data.train_x[fit_idx])
    test_feats = features_of("test", data.test_x[test_idx])
    summary = FeatureSummary(backbone=spec.name, weights=backbone.weights, weights_digest=backbone.weights_digest, resolution=size,
                             device=str(device), feature_dim=spec.feature_dim, mean=list(spec.mean), std=list(spec.std),
                             train_images=len(train_idx), val_images=len(val_idx), test_images=len(test_idx),
                             features_cached=not computed, backbone_choice=choice.reason, **extract_stats)
    return ProbeFeatures(spec, data, train_idx, val_idx, test_idx, fit_idx, train_feats_all, test_feats, summary)


def step_1a_fit(cfg: ProbeConfig, run: RunDir, f: ProbeFeatures) -> tuple[ProbeScores, torch.Tensor]:
    """1A, second half: L2 chosen on the validation split, refit on train + validation, test evaluation; the fit and the
    test probabilities."""
    log(f"[1A] choosing L2 on the validation split from {cfg.l2_grid}")
    t0 = time.perf_counter()
    fy = f.data.train_y[f.fit_idx]
    tr, va = f.rows_of(f.train_idx), f.rows_of(f.val_idx)
    l2, rows, chosen_model = choose_l2(f.fit_feats[tr], fy[tr], f.fit_feats[va], fy[va], cfg.l2_grid, cfg.max_iter)
    rows_df = pd.DataFrame(rows)
    run.save_table("probe_l2_grid", rows_df)
    run.save_figure("probe_l2_grid", figures.l2_choice(rows_df, l2))
    final = fit_probe(f.fit_feats, fy, l2, cfg.max_iter, init=chosen_model)  # refit on train + validation, warm-started
    fit_s = time.perf_counter() - t0
    run.save_figure("probe_training_curve", figures.curve(final.losses, "L-BFGS function evaluation", "regularised cross-entropy",
                                                          "Probe training curve (train + validation, chosen L2)", log_scale=True))
    test_y = f.data.test_y[f.test_idx]
    test_probs = predict_proba(final.model, f.test_feats)
    run.save_artefact("probe_test_probs.npz", npz_bytes(probs=test_probs.numpy(), labels=test_y.numpy(), test_index=f.test_idx.numpy()))
    run.save_artefact("probe_model.pt", torch_bytes(final.model.state_dict()))
    run.save_artefact(LP_FT_PROBE, torch_bytes(chosen_model.state_dict()))  # LP-FT's start: no validation label seen
    chosen = next(r for r in rows if r["l2"] == l2)
    ev = evaluation_tables(run, "probe", test_probs, test_y, f"Linear probe on {f.spec.name} features — test set")
    fit = ProbeScores(l2=l2, train_accuracy=accuracy(predict_proba(final.model, f.fit_feats), fy), val_accuracy=chosen["val_acc"],
                   evaluation=ev, fit_seconds=round(fit_s, 2), trainable_parameters=sum(p.numel() for p in final.model.linear.parameters()),
                   probe_iterations=len(final.losses))
    log(f"[1A] L2 = {l2:g}: train {fit.train_accuracy:.4f}, val {fit.val_accuracy:.4f}, test {ev.test_accuracy:.4f}")
    return fit, test_probs


def step_1b_gallery(cfg: ProbeConfig, run: RunDir, f: ProbeFeatures, test_probs: torch.Tensor) -> None:
    """1B: the most confident correct and incorrect test predictions per class, in one figure."""
    save_gallery(run, "probe_gallery", test_probs, f.data, f.test_idx, cfg.gallery_k,
                 f"Linear probe on frozen {f.spec.name} features: most confident correct and incorrect test predictions per class")
    save_view_images(run, "probe", test_probs, f.data, f.test_idx)
    log("[1B] gallery saved")


def measure_train_throughput(model: torch.nn.Module, batch: int, size: int, device: torch.device, steps: int = 5,
                             warmup: int = 2) -> float:
    """Images/s of forward + backward on random input, on a copy (the real model's BatchNorm stats stay untouched):
    the median of ``steps`` steps after ``warmup``. With one warm-up and the mean of two steps, the estimate printed for
    the cpu recipe was half the rate the training then ran at (84-89 vs 158-174 img/s, efficientnet_lite1 on AVX-512);
    single steps there vary from 0.38 to 0.84 s, so the median of five is what gets within 10 % of the real rate."""
    import copy

    probe_model = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    seconds = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device)):
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            probe_model(x).float().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                seconds.append(time.perf_counter() - t0)
    return batch / float(np.median(seconds))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def check_finetune_batches(cfg: FinetuneConfig, spec: BackboneSpec, device: torch.device) -> int:
    """The training resolution, once the training and evaluation batches are known to fit in the device's memory."""
    size = resolve_size(cfg, spec.native_size, device)
    check_batch_fits("--batch-size", cfg.batch_size, max(size, cfg.start_size or 0), "training", device)
    check_batch_fits("--eval-batch-size", inference_batch(cfg.eval_batch_size, device, EVAL_BATCH_GPU), size, "inference", device)
    return size


def step_1c_setup(cfg: FinetuneConfig, run: RunDir) -> tuple[torch.device, Backbone, int, int]:
    """Device, backbone, frozen stages, resolution and evaluation batch resolved and saved in config.json; then the
    probe (rank 0), if due."""
    device = pick_device(cfg.device)
    choice = choose_backbone(cfg.backbone, cfg.weights, cfg.offline)
    backbone = create_backbone(choice.name, cfg.weights, cfg.seed)
    frozen = resolve_freeze_stages(cfg, backbone.spec, device)
    check_freeze_stages(backbone.spec, frozen)  # before the probe's minutes
    size = check_finetune_batches(cfg, backbone.spec, device)
    run.update_config("finetune", {**to_dict(cfg), "backbone": choice.name, "resolved": {"device": str(device), "size": size, "freeze_stages": frozen,
                                                               "eval_batch_size": inference_batch(cfg.eval_batch_size, device, EVAL_BATCH_GPU)}})
    if cfg.probe and current().is_main and load(run).probe is None:
        run_probe(cfg.probe_config(), run)
    return device, backbone, frozen, size


def run_finetune(cfg: FinetuneConfig, run: RunDir, resume: bool = False, compare: bool = True) -> FinetuneResult:
    """Part 1 C into ``run``: the probe (unless done or disabled), fine-tuning, its evaluation and gallery, the comparison.

    With ``resume`` the loop continues from the run's last complete epoch checkpoint. Under torchrun every
    rank calls this: rank 0 alone runs the probe and keeps the checkpoint, which every rank resumes from; the
    other ranks' ``run`` folders are scratch.
    """
    cfg.validate()
    dist = current()
    t_all = time.perf_counter()
    device, backbone, frozen, size = step_1c_setup(cfg, run)
    spec = backbone.spec
    data, train_idx, val_idx, test_idx = load_splits(cfg)  # the probe's split
    check_shards(cfg, len(train_idx), len(val_idx), dist.world)  # before the throughput measurement's training steps
    model, head, trained, head_init = step_1c_model(cfg, run, backbone, frozen)
    n_trainable = backbone.trainable_parameters  # of the model with its new head
    n_total = sum(p.numel() for p in model.parameters())
    inputs = Inputs(size, spec.mean, spec.std)

    steps = len(train_idx) // cfg.batch_size
    ips, expected = _expected_time(cfg, model, size, device, steps * cfg.batch_size, cfg.epochs * len(val_idx) + len(test_idx))
    layers = f"{cfg.train_scope} layers" + (f" after the first {frozen} stages" if frozen else "")
    log(f"[1C] fine-tuning {spec.name} ({backbone.weights}, {layers}, {n_trainable:,} trainable parameters) on {device} "
        f"at {size} px: {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} x {steps * cfg.batch_size:,} images at about {ips:.0f} img/s "
        f"-> expected about {_duration(expected)}")
    job = Job(cfg, inputs, device, *_checkpoint(run, resume))
    history = step_1c_train(run, model, head, trained, data, (train_idx, val_idx), job)
    epochs = pd.DataFrame(history.epochs)
    run.save_table("finetune_epochs", epochs.round(4))

    test = step_1c_test(run, model, job, data, test_idx, spec.name)
    probe = load(run).probe
    probe_val = None if probe is None else probe.fit.val_accuracy
    run.save_figure("finetune_curves", figures.finetune_curves(history.step_loss, epochs, steps, probe_val))
    train_s = float(epochs["train_seconds"].sum())
    result = FinetuneResult(
        backbone=spec.name, weights=backbone.weights, weights_digest=backbone.weights_digest, resolution=size,
        device=str(device), train_scope=cfg.train_scope, frozen_stages=[name for stage in spec.stages[:frozen] for name in stage],
        trainable_parameters=n_trainable, total_parameters=n_total,
        train_images=len(train_idx), val_images=len(val_idx), test_images=len(test_idx), epochs=cfg.epochs,
        start_size=cfg.start_size, ema=cfg.ema, head_init=head_init,
        train_pixels=train_pixels(size, cfg.start_size, cfg.epochs, steps * cfg.batch_size),
        steps=len(history.step_loss), val_accuracy=float(epochs["val_accuracy"].iloc[-1]),
        best_epoch_val_accuracy=float(epochs["val_accuracy"].max()), evaluation=test.evaluation, tta_flip=cfg.tta_flip,
        test_accuracy_one_view=test.one_view_accuracy,
        train_seconds=round(train_s, 1), train_images_per_second=steps * cfg.batch_size * len(epochs) / train_s,
        val_seconds=round(float((len(val_idx) / epochs["val_images_per_second"]).sum()), 1),
        test_images_per_second=test.images_per_second, expected_seconds=round(expected, 1),
        bare_train_images_per_second=ips, processes=dist.world, batch_per_process=cfg.batch_size // dist.world,
        total_seconds_this_session=round(time.perf_counter() - t_all, 1),
        backbone_choice=choose_backbone(cfg.backbone, cfg.weights, cfg.offline).reason,
    )
    save(run, result)
    log(f"[1C] fine-tuned test accuracy {test.evaluation.test_accuracy:.4f} after {train_s / 60:.1f} min of training")
    if compare and probe is not None:  # the main job orders the comparison itself
        run_comparison(run)
    return result


def step_1c_model(cfg: FinetuneConfig, run: RunDir, backbone: Backbone,
                  frozen: int) -> tuple[torch.nn.Module, torch.nn.Module, tuple[str, ...] | None, str]:
    """The network to fine-tune: the backbone with a new 10-way head, started from the probe (LP-FT) or at random;
    (model, head, the trained parameters' names, how the head started)."""
    torch.manual_seed(cfg.seed)  # the training job seeds torch's global generator once: the new head's start and dropout draw from it
    model, head, trained = backbone.with_new_head(len(CLASSES), cfg.train_scope, frozen)
    head_init = resolve_head_init(cfg.head_init, load(run).probe)
    if head_init == "probe" and current().is_main:  # DistributedDataParallel gives the other ranks rank 0's weights
        init_head_from_probe(head, run)
    return model, head, trained, head_init


def resolve_head_init(head_init: str, probe: ProbeResult | None) -> str:
    """"auto" is "probe" when the run has a finished probe (the probe step ran first), else "random"."""
    if head_init != "auto":
        return head_init
    return "probe" if probe is not None else "random"


def init_head_from_probe(head: torch.nn.Module, run: RunDir) -> None:
    """LP-FT: the new classifier starts as the run's linear probe (its standardisation folded into the weights).

    The probe fitted on the training split alone, not its refit on train + validation: fine-tuning's validation
    accuracy, which chooses the recipe, must not have seen the validation labels.
    """
    path = run.artefact(LP_FT_PROBE)
    if not path.is_file():
        raise MissingFileError(f"--head-init probe: no linear probe in {run.path} ({path.name} is missing); run the probe first "
                               f"(drop --no-probe) or use --head-init random")
    try:
        state = read_torch(path)
        if not isinstance(state, dict) or not {"linear.weight", "linear.bias", "mu", "sigma"} <= set(state):
            raise UnreadableFile("not the probe's state dict")
    except UnreadableFile as exc:
        raise InputError(f"--head-init probe: {path} is damaged ({exc}); run the probe again in a new folder, "
                         "or use --head-init random") from None
    w, b = folded_linear(state)
    if w.shape != head.weight.shape:
        raise InputError(f"--head-init probe: the probe in {run.path} has weights of shape {tuple(w.shape)}, the new classifier "
                         f"{tuple(head.weight.shape)}; the probe must use the same backbone")
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    log("[1C] the new classifier starts from the linear probe (LP-FT)")


def _checkpoint(run: RunDir, resume: bool) -> tuple[Path, bool]:
    """Rank 0's checkpoint path, and whether to resume from it (not when the run has none yet)."""
    checkpoint = Path(str(current().broadcast_object(str(run.artefact("finetune_checkpoint.pt")))))
    if resume and not checkpoint.is_file():
        log("[1C] no checkpoint in this run yet: starting fine-tuning from the first epoch")
        resume = False
    return checkpoint, resume


def step_1c_train(run: RunDir, model: torch.nn.Module, head: torch.nn.Module, trained: tuple[str, ...] | None, data: Cifar10,
                  split: tuple[torch.Tensor, torch.Tensor], job: Job) -> History:
    """1C's training loop (from rank 0's checkpoint when resuming); Ctrl-C says how to continue."""
    train_idx, val_idx = split
    try:
        return train(model, head, (data.train_x[train_idx], data.train_y[train_idx]), (data.train_x[val_idx], data.train_y[val_idx]),
                     job, trainable=trained)
    except KeyboardInterrupt as exc:
        raise type(exc)(f"{exc}. Continue with: embedlab vision finetune --resume {run.path}") from None


def _expected_time(cfg: FinetuneConfig, model: torch.nn.Module, size: int, device: torch.device, images_per_epoch: int,
                   eval_images: int) -> tuple[float, float]:
    """(measured training images/s, expected seconds for training and evaluation): inference runs ~2.5x a training step,
    and flip TTA evaluates every image twice."""
    ips = measure_train_throughput(model, cfg.batch_size, size, device)
    passes = 2 if cfg.tta_flip else 1
    return ips, train_pixels(size, cfg.start_size, cfg.epochs, images_per_epoch) / size**2 / ips + passes * eval_images / (2.5 * ips)


@dataclass(frozen=True)
class FinetuneTest:
    """1C's repeat of A: the fine-tuned network's test evaluation (with flip TTA when on), its single-view accuracy and speed."""

    evaluation: Evaluation
    one_view_accuracy: float
    images_per_second: float


def step_1c_test(run: RunDir, model: torch.nn.Module, job: Job, data: Cifar10, test_idx: torch.Tensor, name: str) -> FinetuneTest:
    """1C's repeat of A and B: the fine-tuned network's test evaluation and gallery."""
    cfg, inputs, device = job.cfg, job.inputs, job.device
    test_probs, test_ips, one_view = predict(model, data.test_x[test_idx], inputs, cfg.eval_batch_size, device, desc="test",
                                             flip=cfg.tta_flip)
    test_y = data.test_y[test_idx]
    run.save_artefact("finetune_test_probs.npz", npz_bytes(probs=test_probs.numpy(), labels=test_y.numpy(), test_index=test_idx.numpy()))
    ev = evaluation_tables(run, "finetune", test_probs, test_y, f"Fine-tuned {name} — test set")
    save_gallery(run, "finetune_gallery", test_probs, data, test_idx, cfg.gallery_k,
                 f"Fine-tuned {name}: most confident correct and incorrect test predictions per class")
    save_view_images(run, "finetune", test_probs, data, test_idx)
    # the saved probabilities, galleries and accuracies are the flip-averaged ones when TTA is on
    return FinetuneTest(ev, float((one_view.argmax(1) == test_y).float().mean()), test_ips)


def run_comparison(run: RunDir) -> pd.DataFrame:
    """The fixed-features vs fine-tuned table and per-class figure, from the run's saved results alone."""
    results = load(run)
    table = comparison_table(results.probe, results.finetune)
    per_class = per_class_table(results.probe, results.finetune)
    run.save_table("comparison", table)
    run.save_table("comparison_per_class", per_class.round(4))
    run.save_figure("comparison_per_class", figures.per_class_comparison(per_class))
    p, f = table.iloc[0], table.iloc[1]
    changes = changes_table(run)
    overall = None if changes is None else changes.iloc[-1]
    save(run, Comparison(accuracy_gain=float(f["test_accuracy"] - p["test_accuracy"]),
                         error_reduction=float(1 - (1 - f["test_accuracy"]) / max(1e-9, 1 - p["test_accuracy"])),
                         classes_improved=int((per_class["gain"] > 0).sum()),
                         **({} if overall is None else {"paired_images": int(overall["images"]),
                                                        **{k: overall[k].item() for k in ("fixed", "broken", "both_wrong", "mcnemar_p")}})))
    return table


def _saved_predictions(path: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(probabilities, labels, test indices) of a ``*_test_probs.npz`` artefact; the file is closed again."""
    with np.load(path) as z:
        return torch.from_numpy(z["probs"]), torch.from_numpy(z["labels"]), z["test_index"].copy()


def changes_table(run: RunDir) -> pd.DataFrame | None:
    """Which test images fine-tuning fixed and broke against the probe, per class and overall, with the exact McNemar
    test, from the two saved probability files, on the test images both were evaluated on (None when the run holds
    only one of the files, or they share no image)."""
    paths = [run.artefact(f"{name}_test_probs.npz") for name in ("probe", "finetune")]
    if not all(p.is_file() for p in paths):
        return None
    (probe_p, labels, index), (ft_p, ft_labels, ft_index) = (_saved_predictions(p) for p in paths)
    common, rows_p, rows_f = np.intersect1d(index, ft_index, return_indices=True)  # a subsampled run may test on fewer
    if not len(common):
        return None
    rows_p, rows_f = torch.from_numpy(rows_p), torch.from_numpy(rows_f)
    if not torch.equal(labels[rows_p], ft_labels[rows_f]):
        raise InputError(f"{paths[0].name} and {paths[1].name} in {run.path} give the same test images other labels; "
                         "one of them was edited or comes from another run")
    changes = paired_changes(probe_p[rows_p].argmax(1), ft_p[rows_f].argmax(1), labels[rows_p], CLASSES)
    run.save_table("comparison_changes", changes, floatfmt=".3g")
    return changes
