"""The Markdown sections of the vision studies, written from metrics.json, config.json and tables only."""

from __future__ import annotations

from embedlab.report.common import figure, table
from embedlab.runs import RunDir, md_code


def probe_section(run: RunDir) -> str:
    """Part 1A (choices and accuracy) and 1B (galleries) of a linear-probe run."""
    m = run.read_json("metrics.json")["probe"]
    p = run.config("probe")
    extract = ""
    if m.get("features_cached"):
        extract = " Features came from the on-disk cache (extracted by an earlier run with the same backbone, weights, resolution and images)."
    if "extract_train_images_per_second" in m:
        extract += (f" Extraction ran at {m['extract_train_images_per_second']:.0f} img/s ({m['extract_train_seconds'] / 60:.1f} min for the training images"
                    f"{', when the cache was built' if m.get('features_cached') else ''}).")
    out = [
        "## Part 1A — frozen features + logistic regression", "",
        f"**Test accuracy: {100 * m['test_accuracy']:.2f} %** ({m['test_images']:,} test images, touched once) — "
        f"train {100 * m['train_accuracy']:.2f} %, validation {100 * m['val_accuracy']:.2f} %.", "",
        "Every choice, and why:", "",
        f"- **Backbone**: {md_code(m['backbone'])}, weights {md_code(m['weights'])} (digest {md_code(m['weights_digest'])}), frozen, eval mode, "
        "`torch.inference_mode`, channels_last.",
        f"- **Feature layer**: the globally average-pooled output of the last convolutional stage ({m['feature_dim']} numbers), "
        "i.e. the input of the ImageNet classifier: the most linearly separable, class-level representation the network has.",
        f"- **Resolution**: {m['resolution']} px on {md_code(m['device'])}. CIFAR's 32 px images are upsampled bilinearly as a batched tensor "
        "op; ImageNet networks expect objects tens of pixels wide, so larger inputs give better features at a quadratic cost "
        "(the native 224 px is the GPU default; the CPU default keeps one pass over 60 000 images near a quarter hour)." + extract,
        f"- **Normalisation**: pixels scaled to 0..1, then the backbone's own ImageNet statistics (mean {m['mean']}, std {m['std']}); "
        "the features are then standardised with training statistics inside the classifier (a buffer of the `nn.Module`).",
        f"- **Classifier**: `LogisticRegression(nn.Module)` = `nn.Linear({m['feature_dim']}, 10)` on standardised features, "
        f"softmax cross-entropy, {m['trainable_parameters']:,} trainable parameters.",
        f"- **Optimiser**: full-batch L-BFGS with strong-Wolfe line search (at most {p['max_iter']} iterations): the problem is convex "
        "and small, so a deterministic second-order method converges without a learning rate or epoch count to tune.",
        f"- **Regularisation**: L2 on the weights (not the bias), strength chosen from {p['l2_grid']} by validation accuracy on "
        f"{m['val_images']:,} images carved from the training set (seeded, stratified, {p['val_per_class']} per class) → "
        f"**{m['l2']:g}**; then refitted on train + validation ({m['train_images'] + m['val_images']:,} images). "
        f"Fitting took {m['fit_seconds']} s.", "",
        table(run, "probe_l2_grid"), "",
        figure(run, "probe_l2_grid", "L2 choice",
               "Where the validation curve peaks is the chosen strength; the gap to the training curve is the overfitting it prevents."), figure(run, "probe_training_curve", "training curve",
               "The loss should flatten before the iteration limit: then L-BFGS converged and the budget did not cut the fit short."), "",
        "Per-class test accuracy and confusion matrix:", "",
        table(run, "probe_per_class"), "", figure(run, "probe_confusion", "confusion matrix",
               "Off-diagonal cells are the confusions: look for pairs of similar classes (cat/dog, automobile/truck)."), "",
        "## Part 1B — most confident correct and incorrect test predictions", "",
        "For each true class (rows): the 5 correctly classified test images with the highest predicted probability, then the 5 "
        "misclassified ones with the highest probability on the wrong label (titled with the predicted label, its probability "
        "and the true label). Indices and probabilities are in `tables/probe_gallery.csv`; all test probabilities in "
        "`artefacts/probe_test_probs.npz`.", "",
        figure(run, "probe_gallery", "probe gallery",
               "Left five of each row: confident and right; right five: confident and wrong, often a plausible label or an ambiguous image."), "",
    ]
    return "\n".join(out)


def _minutes(seconds: float | None) -> str:
    return "not measured" if seconds is None else f"{seconds / 60:.1f} min"


def finetune_section(run: RunDir) -> str:
    """Part 1C: the recipe and every choice, the fine-tuned model's A and B, and the comparison."""
    metrics = run.read_json("metrics.json")
    m = metrics["finetune"]
    c = run.config("finetune")
    opt = (f"SGD with Nesterov momentum {c['momentum']}" if c["optimizer"] == "sgd" else
           "AdamW (chosen over SGD with Nesterov momentum by validation accuracy at equal compute: +1.1 points)")
    sched = ("linear warm-up over the first {:.0%} of the steps, then cosine decay to zero" if c["schedule"] == "cosine"
             else "one-cycle (warm-up over the first {:.0%} of the steps)").format(c["warmup_fraction"])
    frozen = m.get("frozen_stages") or []
    scope = ("the last stage and the new head only (earlier stages frozen, their BatchNorm statistics kept)" if m["train_scope"] != "all"
             else f"every layer after {', '.join(f'`{n}`' for n in frozen)} (frozen, their ImageNet BatchNorm statistics kept, "
                  "no backward pass through them)" if frozen else "every layer")
    out = [
        "## Part 1C — fine-tuning the network", "",
        f"**Test accuracy: {100 * m['test_accuracy']:.2f} %** ({m['test_images']:,} test images, touched once, after the last epoch) — "
        f"validation {100 * m['val_accuracy']:.2f} % after epoch {m['epochs']}. Training took {_minutes(m['train_seconds'])} "
        f"on {md_code(m['device'])} ({m['train_images_per_second']:.0f} img/s; {m['epochs']} epochs, {m['steps']:,} steps).", "",
        "The recipe, and why:", "",
        f"- **Start**: {md_code(m['backbone'])} with weights {md_code(m['weights'])}; the ImageNet classifier replaced by a new "
        f"10-way `nn.Linear` head; {scope} trained: **{m['trainable_parameters']:,} trainable parameters** "
        f"of {m['total_parameters']:,}.",
        f"- **Resolution**: {m['resolution']} px (probe at {metrics.get('probe', {}).get('resolution', '—')} px). "
        "On a CPU the cost of a step grows with the square of the side, and the resolution was chosen by measured validation "
        "accuracy per minute (README, *Choosing the CPU recipe*); on a GPU the native 224 px.",
        _augmentation(c),
        f"- **Optimiser**: {opt}, peak learning rate {c['lr']:g} for the head"
        + (f" and {c['lr'] * c['backbone_lr_scale']:g} for the backbone" if c["backbone_lr_scale"] != 1 else " and the backbone") +
        f", batch {c['batch_size']}; {sched}, stepped every batch. " + _warmup_why(m) +
        " Cosine to zero needs no stopping rule within a fixed budget.",
        f"- **Regularisation**: weight decay {c['weight_decay']:g}{' (decoupled, as AdamW does it)' if c['optimizer'] == 'adamw' else ''} "
        "on weights only (norm and bias parameters excluded: decaying "
        f"them does not regularise), label smoothing {c['label_smoothing']:g}, augmentation above; no early stopping — the "
        "fixed schedule runs out and the last epoch is tested.",
        *_levers(c, m),
        f"- **Precision**: {'bf16 autocast and channels_last' if m['device'].startswith('cuda') else 'fp32 (bf16 is far slower on these CPUs), channels_last (measured faster on CPU too)'}.",
        "- **Checkpoints**: after every epoch (model, optimiser, scheduler, RNG states) in `artefacts/finetune_checkpoint.pt`; "
        f"`embedlab vision finetune --resume {run.path}` continues an interrupted run exactly.", "",
        table(run, "finetune_epochs"), "",
        figure(run, "finetune_curves", "fine-tuning curves",
               "Validation accuracy should rise to the end of the schedule; a validation loss rising late would mean overfitting."), "",
        "Per-class test accuracy and confusion matrix of the fine-tuned network:", "",
        table(run, "finetune_per_class"), "", figure(run, "finetune_confusion", "fine-tuned confusion matrix",
               "Compare with the probe matrix: which confusions shrink and which remain."), "",
        "### Part 1C (B) — most confident correct and incorrect test predictions, fine-tuned", "",
        figure(run, "finetune_gallery", "fine-tuned gallery",
               "The confident mistakes that remain after fine-tuning: look for label noise and genuinely ambiguous images."), "",
    ]
    if "comparison" in metrics:
        out += comparison_paragraph(run, metrics)
    return "\n".join(out)


def _augmentation(c: dict) -> str:
    """The training augmentation as this run's config set it (``.get``: runs saved before the two options existed)."""
    padding = "reflected" if c.get("pad_mode") == "reflect" else "zero"
    flips = ("; the flips alternate: each image's is drawn once and reversed every epoch, so two epochs show it both ways round"
             if c.get("flip") == "alternate" else "")
    return (f"- **Augmentation**: random crop of the 32 px image with {c['pad']} px {padding} padding and a horizontal flip "
            f"(the classic CIFAR recipe, applied before the resize so it costs the same at any resolution){flips}; then "
            "bilinear resize and the backbone's ImageNet normalisation. Validation and test images are only resized and normalised.")


def _warmup_why(m: dict) -> str:
    """Why the schedule warms up, said for the head this run actually started from."""
    if m.get("head_init") == "probe":
        return ("Warm-up lets the optimiser's running statistics settle before the full rate reaches the pretrained "
                "features (the head starts from the probe, so the first gradients are already small).")
    return "Warm-up keeps the first large gradients of the random head from wrecking the pretrained features."


def _levers(c: dict, m: dict) -> list[str]:
    """The optional parts of the recipe, each said as on or off."""
    start = c.get("start_size")
    size = c["resolved"]["size"]
    return [
        "- **Progressive resizing**: " + (f"the first epoch at {start} px, rising linearly to {size} px at the last (smaller "
                                          "images early, when the features move most, buy more steps at the same compute)."
                                          if start else "no; every epoch at the same resolution."),
        "- **Weight averaging**: " + (f"an exponential moving average of the weights and BatchNorm statistics, time constant "
                                      f"{c['ema']:g} of the training steps, is what is validated and tested." if c.get("ema")
                                      else "no; the last weights are tested."),
        "- **Head initialisation**: " + ("from the linear probe's weights, its standardisation folded in (LP-FT: the "
                                         "backbone's features are not pulled around by a random head's large early "
                                         "gradients)." if m.get("head_init") == "probe" else "random (PyTorch's default for "
                                                                                             "`nn.Linear`, seeded)."),
        "- **Test-time augmentation**: " + ("each validation and test image and its mirror image, probabilities averaged "
                                            "(2 passes); `test_accuracy_one_view` in metrics.json is the single pass."
                                            if c.get("tta_flip") else "none; one pass."),
    ]


def comparison_paragraph(run: RunDir, metrics: dict) -> list[str]:
    """The comparison, written from the measured numbers."""
    p, f, cmp = metrics["probe"], metrics["finetune"], metrics["comparison"]
    per_class = run.path / "tables" / "comparison_per_class.csv"
    import pandas as pd

    pc = pd.read_csv(per_class)
    best, worst = pc.sort_values("gain").iloc[-1], pc.sort_values("gain").iloc[0]
    wall = pd.read_csv(run.path / "tables" / "comparison.csv")["train_wall_seconds"]
    probe_time = None if pd.isna(wall.iloc[0]) else float(wall.iloc[0])
    verdict = ("more accurate than" if cmp["accuracy_gain"] > 0 else "no better than")
    cost = ""
    if probe_time:
        cost = f" — {f['train_seconds'] / probe_time:.1f}× the probe's time"
    text = (
        f"Fine-tuning was **{verdict}** the logistic regression on frozen features: **{100 * f['test_accuracy']:.2f} %** against "
        f"**{100 * p['test_accuracy']:.2f} %** ({100 * cmp['accuracy_gain']:+.2f} points, {100 * cmp['error_reduction']:.0f} % "
        f"fewer test errors). It improved {cmp['classes_improved']} of 10 classes; the largest change is *{best['class']}* "
        f"({100 * best['fixed_features']:.1f} → {100 * best['fine_tuned']:.1f} %), the smallest *{worst['class']}* "
        f"({100 * worst['fixed_features']:.1f} → {100 * worst['fine_tuned']:.1f} %). "
        f"The price: {f['trainable_parameters']:,} trainable parameters instead of {p['trainable_parameters']:,}, and "
        f"{_minutes(f['train_seconds'])} of training at {f['resolution']} px{cost} (the probe: {_minutes(probe_time)} at "
        f"{p['resolution']} px — one frozen pass over the images, then a convex fit that takes seconds and can be redone "
        "for free from the cached features)."
    )
    return ["### Comparison: fixed features vs fine-tuning", "", text, "", table(run, "comparison"), "",
            figure(run, "comparison_per_class", "per-class comparison",
               "Bars above zero are the classes fine-tuning improves; compare them with the probe weakest classes."), "", table(run, "comparison_per_class"), ""]
