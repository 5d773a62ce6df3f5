"""Part 1 C as steps: fine-tuning's settings resolved, the network with its new head (LP-FT from the probe), the
training loop, the test evaluation and gallery, and the comparison with the probe. None takes a run folder: the
runner hands in the probe's weights, the checkpoint path and both models' predictions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from embedlab.config import FinetuneConfig
from embedlab.distributed import current
from embedlab.errors import InputError
from embedlab.overrides import DERIVED, to_dict
from embedlab.results import Comparison, Evaluation, FinetuneResult, ProbeResult
from embedlab.store import Output, Predictions, Table
from embedlab.text import percent
from embedlab.vision import figures, runtime
from embedlab.vision.backbones import Backbone, create_backbone
from embedlab.vision.cifar10 import CLASSES, Cifar10
from embedlab.vision.compare import comparison_table, per_class_table
from embedlab.vision.evaluate import paired_changes
from embedlab.vision.features import check_batch_fits, inference_batch, pick_device
from embedlab.vision.finetune import History, Inputs, Job, train, validates
from embedlab.vision.probe import folded_linear
from embedlab.vision.recipe import EVAL_BATCH_GPU, Views, check_shards, passes, predict, train_pixels
from embedlab.vision.registry import BackboneChoice, BackboneSpec, check_freeze_stages, choose_backbone
from embedlab.vision.steps import evaluation_output, gallery_output, load_splits, merged, resolve_size, view_images
from embedlab.vision.timing import duration, expected_time

log = logging.getLogger(__name__).info


def resolve_freeze_stages(cfg: FinetuneConfig, spec: BackboneSpec, device: torch.device) -> int:
    """Explicit --freeze-stages, else none on a GPU or with --train-scope last, else the backbone's CPU default."""
    if cfg.freeze_stages is not None:
        return cfg.freeze_stages
    return 0 if device.type == "cuda" or cfg.train_scope != "all" else spec.cpu_freeze_stages


def check_finetune_batches(cfg: FinetuneConfig, spec: BackboneSpec, device: torch.device) -> int:
    """The training resolution, once the training and evaluation batches are known to fit in the device's memory."""
    size = resolve_size(cfg, spec.native_size, device)
    check_batch_fits("--batch-size", cfg.batch_size, max(size, cfg.start_size or 0), "training", device)
    check_batch_fits(
        "--eval-batch-size", inference_batch(cfg.eval_batch_size, device, EVAL_BATCH_GPU), size, "inference", device
    )
    return size


@dataclass
class FinetuneSetup:
    """Fine-tuning's settings as they will run: device, backbone (chosen once), frozen stages, resolution."""

    device: torch.device
    choice: BackboneChoice
    backbone: Backbone
    frozen: int
    size: int

    def settings(self, cfg: FinetuneConfig) -> dict[str, Any]:
        """config.json's finetune section: the backbone that ran and what was resolved."""
        return {
            **to_dict(cfg),
            "backbone": self.choice.name,
            DERIVED: {
                "device": str(self.device),
                "size": self.size,
                "freeze_stages": self.frozen,
                "eval_batch_size": inference_batch(cfg.eval_batch_size, self.device, EVAL_BATCH_GPU),
            },
        }


def finetune_setup(cfg: FinetuneConfig, choice: BackboneChoice | None = None) -> FinetuneSetup:
    """Device, backbone (``choice``, else chosen here), frozen stages and resolution, each checked before any work (the
    probe's minutes included)."""
    device = pick_device(cfg.device)
    choice = choice or choose_backbone(cfg.backbone, cfg.weights, cfg.offline)
    backbone = create_backbone(choice.name, cfg.weights, cfg.seed)
    frozen = resolve_freeze_stages(cfg, backbone.spec, device)
    check_freeze_stages(backbone.spec, frozen)
    return FinetuneSetup(device, choice, backbone, frozen, check_finetune_batches(cfg, backbone.spec, device))


def resolve_head_init(head_init: str, probe: ProbeResult | None) -> str:
    """ "auto" is "probe" when the run has a finished probe (the probe step ran first), else "random"."""
    if head_init != "auto":
        return head_init
    return "probe" if probe is not None else "random"


def init_head_from_probe(head: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """LP-FT: the new classifier starts as the run's linear probe ``state`` (its standardisation folded into the
    weights). The probe fitted on the training split alone, not its refit on train + validation: fine-tuning's
    validation accuracy, which chooses the recipe, must not have seen the validation labels."""
    w, b = folded_linear(state)
    if w.shape != head.weight.shape:
        raise InputError(
            f"--head-init probe: this run's linear probe has weights of shape {tuple(w.shape)}, the new classifier "
            f"{tuple(head.weight.shape)}; the probe must use the same backbone"
        )
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    log("[1C] the new classifier starts from the linear probe (LP-FT)")


def finetune_model(
    cfg: FinetuneConfig, backbone: Backbone, frozen: int, probe_state: dict[str, torch.Tensor] | None
) -> tuple[torch.nn.Module, torch.nn.Module, tuple[str, ...] | None]:
    """The network to fine-tune: the backbone with a new 10-way head, started from ``probe_state`` (LP-FT) or at random;
    (model, head, the trained parameters' names)."""
    # the training job seeds torch's global generator once: the new head's start and dropout draw from it
    torch.manual_seed(cfg.seed)
    model, head, trained = backbone.with_new_head(len(CLASSES), cfg.train_scope, frozen)
    if probe_state is not None:
        init_head_from_probe(head, probe_state)
    return model, head, trained


@dataclass(frozen=True)
class FinetunePrepared:
    """1C ready to train: the probe's split of CIFAR-10, the network with its new head, how images become input, and
    the training rate measured on it with the time it predicts."""

    data: Cifar10
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    model: torch.nn.Module
    head: torch.nn.Module
    trained: tuple[str, ...] | None  # the submodules trained (None: all)
    head_init: str
    inputs: Inputs
    images_per_second: float
    expected_seconds: float


def prepare_finetune(
    cfg: FinetuneConfig, setup: FinetuneSetup, probe: ProbeResult | None, probe_state: dict[str, torch.Tensor] | None
) -> FinetunePrepared:
    """The split, the network (LP-FT from ``probe_state``, the probe fitted on the training split, when the head starts
    from the probe) and the expected time, said once in the log."""
    spec, size, device = setup.backbone.spec, setup.size, setup.device
    data, train_idx, val_idx, test_idx = load_splits(cfg)  # the probe's split
    check_shards(cfg, len(train_idx), len(val_idx), current().world)  # before the throughput measurement's steps
    head_init = resolve_head_init(cfg.head_init, probe)
    model, head, trained = finetune_model(cfg, setup.backbone, setup.frozen, probe_state)
    steps = len(train_idx) // cfg.batch_size
    validations = sum(validates(cfg, device, epoch) for epoch in range(passes(cfg.epochs)))
    ips, expected = expected_time(
        cfg, model, size, device, steps * cfg.batch_size, validations * len(val_idx) + len(test_idx)
    )
    layers = (
        "the last stage and the head trained, the rest frozen"
        if cfg.train_scope == "last"
        else (f"{frozen_words(setup.frozen)} frozen, the rest trained" if setup.frozen else "every layer trained")
    )
    log(
        f"[1C] fine-tuning {spec.name} ({setup.backbone.weights}, {layers}, "
        f"{setup.backbone.trainable_parameters:,} trainable parameters) on {device} at {size} px: {cfg.epochs:g} "
        f"epoch{'s' if cfg.epochs != 1 else ''} of {steps * cfg.batch_size:,} images at about {ips:.0f} img/s -> "
        f"expected about {duration(expected)}"
    )
    inputs = Inputs(size, spec.mean, spec.std)
    return FinetunePrepared(data, train_idx, val_idx, test_idx, model, head, trained, head_init, inputs, ips, expected)


def frozen_words(stages: int) -> str:
    """``--freeze-stages K`` in the words the docs use: the stem (stage 0) and the stages after it."""
    after = stages - 1
    return "the stem" + (
        "" if not after else " and the first stage" if after == 1 else f" and the first {after} stages"
    )


@dataclass(frozen=True)
class FinetuneTrained:
    """1C's training: the loss of every step, one row per epoch, and its output (the epochs table)."""

    history: History
    epochs: pd.DataFrame
    out: Output


def step_1c_train(prepared: FinetunePrepared, job: Job) -> FinetuneTrained:
    """1C's training loop (from the job's checkpoint when resuming), and its epochs table."""
    p = prepared
    history = train(
        p.model,
        p.head,
        (p.data.train_x[p.train_idx], p.data.train_y[p.train_idx]),
        (p.data.train_x[p.val_idx], p.data.train_y[p.val_idx]),
        job,
        trainable=p.trained,
    )
    epochs = pd.DataFrame(history.epochs)
    return FinetuneTrained(
        history, epochs, Output(owner=FinetuneResult, tables={"finetune_epochs": Table(epochs.round(4))})
    )


@dataclass(frozen=True)
class FinetuneTest:
    """1C's repeat of A: the fine-tuned network's test evaluation (averaged over its test-time views when on), its
    single-view accuracy and speed, and its output (probabilities, evaluation tables, gallery, explorer images)."""

    evaluation: Evaluation
    one_view_accuracy: float
    images_per_second: float
    out: Output


def step_1c_test(model: torch.nn.Module, job: Job, data: Cifar10, test_idx: torch.Tensor, name: str) -> FinetuneTest:
    """1C's repeat of A and B: the fine-tuned network's test evaluation and gallery."""
    cfg, device = job.cfg, job.device
    test_probs, test_ips, one_view = predict(
        model,
        data.test_x[test_idx],
        job.eval_inputs,
        cfg.eval_batch_size,
        "test",
        Views.of(cfg),
        runtime.choose(cfg.runtime, device),
    )
    test_y = data.test_y[test_idx]
    ev, ev_out = evaluation_output("finetune", test_probs, test_y, f"Fine-tuned {name} — test set")
    gallery = gallery_output(
        FinetuneResult,
        "finetune_gallery",
        test_probs,
        data,
        test_idx,
        cfg.gallery_k,
        f"Fine-tuned {name}: most confident correct and incorrect test predictions per class",
    )
    arrays = Output(
        owner=FinetuneResult,
        artefacts={
            "finetune_test_probs.npz": Predictions(test_probs, test_y, test_idx.numpy(), "fine-tuning's predictions"),
            "finetune_view_images.npz": view_images(test_probs, data, test_idx),
        },
    )
    # the saved probabilities, galleries and accuracies are the flip-averaged ones when TTA is on
    return FinetuneTest(
        ev, float((one_view.argmax(1) == test_y).float().mean()), test_ips, merged(arrays, ev_out, gallery)
    )


def step_1c_result(
    cfg: FinetuneConfig,
    setup: FinetuneSetup,
    prepared: FinetunePrepared,
    trained: FinetuneTrained,
    test: FinetuneTest,
    probe: ProbeResult | None,
    seconds: float,
) -> Output:
    """1C's typed result and its curves figure (the probe's validation accuracy drawn beside the epochs when it ran);
    ``seconds`` since fine-tuning started in this process."""
    spec, size, p, epochs = setup.backbone.spec, setup.size, prepared, trained.epochs
    steps = len(p.train_idx) // cfg.batch_size
    probe_val = None if probe is None else probe.fit.val_accuracy
    curves = figures.finetune_curves(trained.history.step_loss, epochs, steps, probe_val)
    train_s = float(epochs["train_seconds"].sum())
    dist = current()
    result = FinetuneResult(
        backbone=spec.name,
        weights=setup.backbone.weights,
        weights_digest=setup.backbone.weights_digest,
        resolution=size,
        device=str(setup.device),
        train_scope=cfg.train_scope,
        frozen_stages=[name for stage in spec.stages[: setup.frozen] for name in stage],
        trainable_parameters=setup.backbone.trainable_parameters,
        total_parameters=sum(x.numel() for x in p.model.parameters()),
        train_images=len(p.train_idx),
        val_images=len(p.val_idx),
        test_images=len(p.test_idx),
        epochs=cfg.epochs,
        start_size=cfg.start_size,
        ema=cfg.ema,
        head_init=p.head_init,
        train_pixels=train_pixels(size, cfg.start_size, cfg.epochs, steps, cfg.batch_size),
        steps=len(trained.history.step_loss),
        val_accuracy=float(epochs["val_accuracy"].iloc[-1]),
        best_epoch_val_accuracy=float(epochs["val_accuracy"].max()),
        evaluation=test.evaluation,
        tta_flip=cfg.tta_flip,
        tta_shifts=cfg.tta_shifts,
        test_accuracy_one_view=test.one_view_accuracy,
        train_seconds=round(train_s, 1),
        train_images_per_second=len(trained.history.step_loss) * cfg.batch_size / train_s,
        val_seconds=round(float((len(p.val_idx) * Views.of(cfg).passes / epochs["val_images_per_second"]).sum()), 1),
        test_images_per_second=test.images_per_second,
        expected_seconds=round(p.expected_seconds, 1),
        bare_train_images_per_second=p.images_per_second,
        processes=dist.world,
        batch_per_process=cfg.batch_size // dist.world,
        total_seconds_this_session=round(seconds, 1),
        backbone_choice=setup.choice.reason,
        runtime=runtime.choose(cfg.runtime, setup.device),
    )
    log(
        f"[1C] fine-tuned test accuracy {percent(test.evaluation.test_accuracy)} after {train_s / 60:.1f} min of"
        " training"
    )
    return Output(results=(result,), figures={"finetune_curves": curves})


def step_compare(
    probe: ProbeResult, finetune: FinetuneResult, probe_preds: Predictions | None, finetune_preds: Predictions | None
) -> Output:
    """The fixed-features vs fine-tuned table, per-class figure and (with both models' predictions) the images each
    fixed and broke, with the exact McNemar test."""
    table = comparison_table(probe, finetune)
    per_class = per_class_table(probe, finetune)
    changes = (
        changes_table(probe_preds, finetune_preds) if probe_preds is not None and finetune_preds is not None else None
    )
    if changes is not None and int(changes.iloc[-1]["images"]) < min(
        len(probe_preds.labels), len(finetune_preds.labels)
    ):
        table, per_class = on_common_images(table, probe_preds, finetune_preds)  # a subsampled run's two test sets
    p, f = table.iloc[0], table.iloc[1]
    overall = None if changes is None else changes.iloc[-1]
    result = Comparison(
        accuracy_gain=float(f["test_accuracy"] - p["test_accuracy"]),
        error_reduction=float(1 - (1 - f["test_accuracy"]) / max(1e-9, 1 - p["test_accuracy"])),
        classes_improved=int((per_class["gain"] > 0).sum()),
        **(
            {}
            if overall is None
            else {
                "paired_images": int(overall["images"]),
                **{k: overall[k].item() for k in ("fixed", "broken", "both_wrong", "mcnemar_p")},
            }
        ),
    )
    tables = {"comparison": Table(table), "comparison_per_class": Table(per_class.round(4))}
    if changes is not None:
        tables["comparison_changes"] = Table(changes)
    return Output(
        results=(result,), tables=tables, figures={"comparison_per_class": figures.per_class_comparison(per_class)}
    )


def on_common_images(
    table: pd.DataFrame, probe: Predictions, finetune: Predictions
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The comparison's accuracies, overall and per class, on the test images both models were evaluated on (a
    subsampled run tests them on different sets): ``table`` with those and their count, and the per-class table."""
    _, rows_p, rows_f = np.intersect1d(probe.test_index, finetune.test_index, return_indices=True)
    labels = probe.labels[torch.from_numpy(rows_p)].numpy()
    right_p = probe.probs[torch.from_numpy(rows_p)].argmax(1).numpy() == labels
    right_f = finetune.probs[torch.from_numpy(rows_f)].argmax(1).numpy() == labels
    table = table.assign(test_accuracy=[right_p.mean(), right_f.mean()], test_images=len(labels))
    shown = [(c, i) for i, c in enumerate(CLASSES) if (labels == i).any()]
    per_class = pd.DataFrame(
        {
            "class": [c for c, _ in shown],
            "fixed_features": [right_p[labels == i].mean() for _, i in shown],
            "fine_tuned": [right_f[labels == i].mean() for _, i in shown],
        }
    )
    return table, per_class.assign(gain=per_class["fine_tuned"] - per_class["fixed_features"])


def changes_table(probe: Predictions, finetune: Predictions) -> pd.DataFrame | None:
    """Which test images fine-tuning fixed and broke against the probe, per class and overall, with the exact McNemar
    test, on the test images both were evaluated on (None when they share no image)."""
    # a subsampled run may test on fewer
    common, rows_p, rows_f = np.intersect1d(probe.test_index, finetune.test_index, return_indices=True)
    if not len(common):
        return None
    rows_p, rows_f = torch.from_numpy(rows_p), torch.from_numpy(rows_f)
    if not torch.equal(probe.labels[rows_p], finetune.labels[rows_f]):
        raise InputError(
            f"{probe.source} and {finetune.source} give the same test images other labels; "
            "one of them was edited or comes from another run"
        )
    return paired_changes(
        probe.probs[rows_p].argmax(1), finetune.probs[rows_f].argmax(1), probe.labels[rows_p], CLASSES
    )
