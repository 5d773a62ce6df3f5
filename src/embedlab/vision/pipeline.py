"""Part 1 end to end: the linear probe (A, B) and fine-tuning (C) with its comparison, each step's output handed to
the run's store as soon as the step finishes. The steps themselves live in ``steps`` (A, B) and ``steps_1c`` (C)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from embedlab.config import FinetuneConfig, ProbeConfig
from embedlab.distributed import current
from embedlab.results import Comparison, FinetuneResult, ProbeResult
from embedlab.store import Output, Store, Table
from embedlab.text import percent
from embedlab.vision import figures, runtime
from embedlab.vision.backbones import BackboneChoice
from embedlab.vision.compare import comparison_table
from embedlab.vision.finetune import Inputs, Job, check_shards
from embedlab.vision.recipe import train_pixels
from embedlab.vision.steps import load_splits, probe_setup, step_1a_features, step_1a_fit, step_1b_gallery
from embedlab.vision.steps_1c import (
    finetune_setup,
    resolve_head_init,
    step_1c_model,
    step_1c_test,
    step_1c_train,
    step_compare,
)
from embedlab.vision.timing import duration, expected_time

log = logging.getLogger(__name__).info


def run_probe(cfg: ProbeConfig, store: Store, choice: BackboneChoice | None = None) -> ProbeResult:
    """Part 1 A and B into ``store`` with the backbone ``choice`` (decided here when not given); returns the probe's
    result (also in metrics.json)."""
    cfg.validate()
    t_all = time.perf_counter()
    setup = probe_setup(cfg, choice)
    store.settings("probe", setup.settings(cfg))  # names the backbone that ran, so --config and --resume repeat it
    feats = step_1a_features(cfg, setup)
    store.write(feats.out)
    fitted = step_1a_fit(cfg, feats)
    store.write(fitted.out)
    store.write(step_1b_gallery(cfg, feats, fitted.test_probs))
    log("[1B] gallery saved")
    result = ProbeResult(feats.summary, fitted.scores, round(time.perf_counter() - t_all, 1))
    store.write(Output(results=(result,)))
    return result


def run_finetune(
    cfg: FinetuneConfig,
    store: Store,
    resume: bool = False,
    compare: bool = True,
    choice: BackboneChoice | None = None,
) -> FinetuneResult:
    """Part 1 C into ``store``: the probe (unless done or disabled), fine-tuning, its evaluation and gallery, the
    comparison.

    With ``resume`` the loop continues from the run's last complete epoch checkpoint. Under torchrun every
    rank calls this: rank 0 alone runs the probe and keeps the checkpoint, which every rank resumes from; the
    other ranks' stores are scratch.
    """
    cfg.validate()
    dist = current()
    t_all = time.perf_counter()
    setup = finetune_setup(cfg, choice)
    store.settings("finetune", setup.settings(cfg))
    if cfg.probe and dist.is_main and store.results().probe is None:
        run_probe(
            cfg.probe_config(), store, setup.choice
        )  # the probe fine-tuning is compared with, and LP-FT starts from
    spec, size, device = setup.backbone.spec, setup.size, setup.device
    data, train_idx, val_idx, test_idx = load_splits(cfg)  # the probe's split
    check_shards(cfg, len(train_idx), len(val_idx), dist.world)  # before the throughput measurement's training steps
    head_init = resolve_head_init(cfg.head_init, store.results().probe)
    # DDP gives the other ranks rank 0's weights
    probe_state = store.lp_ft_probe() if head_init == "probe" and dist.is_main else None
    model, head, trained = step_1c_model(cfg, setup.backbone, setup.frozen, probe_state, store.path)
    n_trainable = setup.backbone.trainable_parameters  # of the model with its new head
    n_total = sum(p.numel() for p in model.parameters())
    inputs = Inputs(size, spec.mean, spec.std)

    steps = len(train_idx) // cfg.batch_size
    ips, expected = expected_time(
        cfg, model, size, device, steps * cfg.batch_size, cfg.epochs * len(val_idx) + len(test_idx)
    )
    layers = (
        "the last stage and the head trained, the rest frozen"
        if cfg.train_scope == "last"
        else (f"{frozen_words(setup.frozen)} frozen, the rest trained" if setup.frozen else "every layer trained")
    )
    log(
        f"[1C] fine-tuning {spec.name} ({setup.backbone.weights}, {layers}, {n_trainable:,} trainable parameters) on"
        f" {device} at {size} px: {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} x {steps * cfg.batch_size:,}"
        f" images at about {ips:.0f} img/s -> expected about {duration(expected)}"
    )
    job = Job(cfg, inputs, device, *_checkpoint(store, resume))
    history = step_1c_train(model, head, trained, data, (train_idx, val_idx), job)
    epochs = pd.DataFrame(history.epochs)
    store.write(Output(owner=FinetuneResult, tables={"finetune_epochs": Table(epochs.round(4))}))

    test = step_1c_test(model, job, data, test_idx, spec.name)
    store.write(test.out)
    probe = store.results().probe
    probe_val = None if probe is None else probe.fit.val_accuracy
    store.write(
        Output(
            owner=FinetuneResult,
            figures={"finetune_curves": figures.finetune_curves(history.step_loss, epochs, steps, probe_val)},
        )
    )
    train_s = float(epochs["train_seconds"].sum())
    result = FinetuneResult(
        backbone=spec.name,
        weights=setup.backbone.weights,
        weights_digest=setup.backbone.weights_digest,
        resolution=size,
        device=str(device),
        train_scope=cfg.train_scope,
        frozen_stages=[name for stage in spec.stages[: setup.frozen] for name in stage],
        trainable_parameters=n_trainable,
        total_parameters=n_total,
        train_images=len(train_idx),
        val_images=len(val_idx),
        test_images=len(test_idx),
        epochs=cfg.epochs,
        start_size=cfg.start_size,
        ema=cfg.ema,
        head_init=head_init,
        train_pixels=train_pixels(size, cfg.start_size, cfg.epochs, steps * cfg.batch_size),
        steps=len(history.step_loss),
        val_accuracy=float(epochs["val_accuracy"].iloc[-1]),
        best_epoch_val_accuracy=float(epochs["val_accuracy"].max()),
        evaluation=test.evaluation,
        tta_flip=cfg.tta_flip,
        test_accuracy_one_view=test.one_view_accuracy,
        train_seconds=round(train_s, 1),
        train_images_per_second=steps * cfg.batch_size * len(epochs) / train_s,
        val_seconds=round(float((len(val_idx) / epochs["val_images_per_second"]).sum()), 1),
        test_images_per_second=test.images_per_second,
        expected_seconds=round(expected, 1),
        bare_train_images_per_second=ips,
        processes=dist.world,
        batch_per_process=cfg.batch_size // dist.world,
        total_seconds_this_session=round(time.perf_counter() - t_all, 1),
        backbone_choice=setup.choice.reason,
        runtime=runtime.choose(cfg.runtime, device),
    )
    store.write(Output(results=(result,)))
    log(
        f"[1C] fine-tuned test accuracy {percent(test.evaluation.test_accuracy)} after {train_s / 60:.1f} min of"
        " training"
    )
    if compare and probe is not None:  # the main job orders the comparison itself
        run_comparison(store, probe, result)
    return result


def frozen_words(stages: int) -> str:
    """``--freeze-stages K`` in the words the docs use: the stem (stage 0) and the stages after it."""
    after = stages - 1
    return "the stem" + (
        "" if not after else " and the first stage" if after == 1 else f" and the first {after} stages"
    )


def _checkpoint(store: Store, resume: bool) -> tuple[Path, bool]:
    """Rank 0's checkpoint path, and whether to resume from it (not when the run has none yet)."""
    checkpoint = Path(str(current().broadcast_object(str(store.checkpoint()))))
    if resume and not checkpoint.is_file():
        log("[1C] no checkpoint in this run yet: starting fine-tuning from the first epoch")
        resume = False
    return checkpoint, resume


def run_comparison(
    store: Store, probe: ProbeResult | None = None, finetune: FinetuneResult | None = None
) -> Comparison:
    """Fixed features against fine-tuning, into ``store``: from the two studies' results when given, else from those
    in ``store`` (they may have run in other processes), and both models' predictions."""
    results = store.results()
    probe, finetune = probe or results.probe, finetune or results.finetune
    comparison_table(probe, finetune)  # says which study has not finished
    assert probe is not None and finetune is not None
    _, out = step_compare(probe, finetune, store.predictions("probe"), store.predictions("finetune"))
    store.write(out)
    (comparison,) = out.results
    return comparison
