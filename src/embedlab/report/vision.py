"""The Markdown sections of the vision studies, written from metrics.json, config.json and tables only."""

from __future__ import annotations

from embedlab.report.common import figure, table
from embedlab.runs import RunDir


def probe_section(run: RunDir) -> str:
    """Part 1A (choices and accuracy) and 1B (galleries) of a linear-probe run."""
    m = run.read_json("metrics.json")["probe"]
    cfg = run.read_json("config.json")
    p = cfg["probe"]
    extract = ""
    if "train_images_per_second" in m:
        extract = f" Extraction ran at {m['train_images_per_second']:.0f} img/s ({m['train_seconds'] / 60:.1f} min for the training images)."
    elif m.get("features_cached"):
        extract = " Features came from the on-disk cache (extracted by an earlier run with the same backbone, weights, resolution and images)."
    out = [
        "## Part 1A — frozen features + logistic regression", "",
        f"**Test accuracy: {100 * m['test_accuracy']:.2f} %** ({m['test_images']:,} test images, touched once) — "
        f"train {100 * m['train_accuracy']:.2f} %, validation {100 * m['val_accuracy']:.2f} %.", "",
        "Every choice, and why:", "",
        f"- **Backbone**: `{m['backbone']}`, weights `{m['weights']}` (digest `{m['weights_digest']}`), frozen, eval mode, "
        "`torch.inference_mode`, channels_last.",
        f"- **Feature layer**: the globally average-pooled output of the last convolutional stage ({m['feature_dim']} numbers), "
        "i.e. the input of the ImageNet classifier: the most linearly separable, class-level representation the network has.",
        f"- **Resolution**: {m['resolution']} px on `{m['device']}`. CIFAR's 32 px images are upsampled bilinearly as a batched tensor "
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
        figure(run, "probe_l2_grid", "L2 choice"), figure(run, "probe_training_curve", "training curve"), "",
        "Per-class test accuracy and confusion matrix:", "",
        table(run, "probe_per_class"), "", figure(run, "probe_confusion", "confusion matrix"), "",
        "## Part 1B — most confident correct and incorrect test predictions", "",
        "For each true class (rows): the 5 correctly classified test images with the highest predicted probability, then the 5 "
        "misclassified ones with the highest probability on the wrong label (titled with the predicted label, its probability "
        "and the true label). Indices and probabilities are in `tables/probe_gallery.csv`; all test probabilities in "
        "`artefacts/probe_test_probs.npz`.", "",
        figure(run, "probe_gallery", "probe gallery"), "",
    ]
    return "\n".join(out)
