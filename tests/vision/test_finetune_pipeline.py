"""``embedlab vision finetune`` end to end on synthetic CIFAR batches: probe, fine-tuning, comparison, report,
resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import with_flags

from embedlab.cli import main
from embedlab.report.common import MISSING


def args_for(cifar_root, out, tmp_path, *extra: str) -> list[str]:
    """The test's fine-tuning command, with ``extra``'s flags given instead of its own."""
    return with_flags(
        [
            "vision",
            "finetune",
            "--data-dir",
            str(cifar_root),
            "--out",
            str(out),
            "--backbone",
            "resnet18",
            "--weights",
            "none",
            "--size",
            "32",
            "--epochs",
            "2",
            "--batch-size",
            "50",
            "--val-per-class",
            "5",
            "--offline",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--probe-size",
            "32",
        ],
        *extra,
    )


def recomputed_test_probs(checkpoint, cifar_root, test_index) -> np.ndarray:
    """Softmax of a torchvision ResNet-18 holding the checkpoint's weights, in eval mode, averaged over the four
    test-time views: the image and its mirror image, each as it is and moved one pixel down and right (numpy's
    reflection at the border)."""
    import pickle

    import torch
    import torchvision

    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        # as CIFAR-10 writes it
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in pickle.load(f, encoding="bytes").items()}
    images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)[test_index]
    moved = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")[:, :, :32, :32]
    x = torch.from_numpy(np.concatenate([images, moved])).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    net = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    with torch.no_grad():
        probs = (net.eval()(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
    return ((probs[: len(images)] + probs[len(images) :]) / 2).numpy()


def test_finetune_run_folder_holds_metrics_gallery_comparison_and_report(cifar_root, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(args_for(cifar_root, out, tmp_path)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ft = metrics["finetune"]
    assert ft["epochs"] == 2 and ft["steps"] == 10 and ft["train_images"] == 250 and ft["test_images"] == 100
    assert ft["trainable_parameters"] == ft["total_parameters"] > 11_000_000
    # LP-FT: the probe ran first in this folder
    assert len(ft["per_class_accuracy"]) == 10 and ft["head_init"] == "probe"
    # Ten steps from random weights leave BatchNorm's running statistics far from the batch statistics, so the
    # eval-mode test accuracy of this tiny run says little (measured: chance); the training accuracy, in train
    # mode, shows that the network learned the colour-coded classes (chance is 0.1; measured 0.296 on one AVX-512
    # machine and above 0.3 on another, whose kernels sum in another order) ...
    epochs = pd.read_csv(out / "tables" / "finetune_epochs.csv")
    assert epochs["train_accuracy"].iloc[-1] > 0.25 and epochs["train_loss"].iloc[-1] < epochs["train_loss"].iloc[0]
    # ... and the saved test predictions are those of the checkpoint's weights in eval mode, recomputed here without
    # embedlab's code: evaluating in train mode, with other weights or without the mirror pass would not match them
    saved = np.load(out / "artefacts" / "finetune_test_probs.npz")
    assert ft["test_accuracy"] == pytest.approx(float((saved["probs"].argmax(1) == saved["labels"]).mean()))
    assert recomputed_test_probs(
        out / "artefacts" / "finetune_checkpoint.pt", cifar_root, saved["test_index"]
    ) == pytest.approx(saved["probs"], abs=1e-3)  # float32 sums in another order (channels-last, batching): 1.5e-4 seen
    assert {"accuracy_gain", "error_reduction", "classes_improved"} <= set(metrics["comparison"])
    # fixed / broken / both wrong, recomputed from the two saved probability files, and what the accuracies imply
    probe = np.load(out / "artefacts" / "probe_test_probs.npz")
    right_p, right_f = probe["probs"].argmax(1) == probe["labels"], saved["probs"].argmax(1) == saved["labels"]
    cmp = metrics["comparison"]
    assert (cmp["fixed"], cmp["broken"], cmp["both_wrong"]) == (
        int((~right_p & right_f).sum()),
        int((right_p & ~right_f).sum()),
        int((~right_p & ~right_f).sum()),
    )
    assert (cmp["fixed"] - cmp["broken"]) / 100 == pytest.approx(
        ft["test_accuracy"] - metrics["probe"]["test_accuracy"]
    )
    assert 0 < cmp["mcnemar_p"] <= 1 and "McNemar" in (out / "report.md").read_text()
    changes = pd.read_csv(out / "tables" / "comparison_changes.csv")
    assert list(changes["class"])[-1] == "all classes" and changes["images"].iloc[:-1].sum() == 100
    assert metrics["probe"]["resolution"] == 32
    for rel in [
        "figures/finetune_gallery.png",
        "figures/finetune_confusion.png",
        "figures/finetune_curves.png",
        "figures/comparison_per_class.png",
        "tables/comparison.csv",
        "tables/finetune_epochs.csv",
        "tables/finetune_gallery.csv",
        "artefacts/finetune_checkpoint.pt",
        "artefacts/finetune_test_probs.npz",
    ]:
        assert (out / rel).is_file(), rel
    report = (out / "report.md").read_text()
    assert MISSING not in report  # every table and figure a section names was saved by its step
    assert "Part 1C" in report and "Comparison: fixed features vs fine-tuning" in report
    assert f"`embedlab vision finetune --resume {out}` continues" in report.replace("\\", "")
    # the recipe says what this run did
    assert "gradients of the random head" not in report and "head starts from the probe" in report
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["finetune"]["resolved"]["size"] == 32 and "probe" in cfg
    # the CPU's inference batch
    assert cfg["finetune"]["resolved"]["eval_batch_size"] == cfg["probe"]["resolved"]["batch_size"] == 16
    capsys.readouterr()
    # resuming a finished run re-evaluates from the last checkpoint without training again
    assert main(["vision", "finetune", "--resume", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())["finetune"]
    assert again["test_accuracy"] == ft["test_accuracy"] and again["steps"] == 10
    assert "resumed after epoch 2 of 2" in capsys.readouterr().out


def test_train_scope_last_and_no_probe(cifar_root, tmp_path):
    out = tmp_path / "ft"
    assert (
        main(
            args_for(
                cifar_root,
                out,
                tmp_path,
                "--train-scope",
                "last",
                "--no-probe",
                "--epochs",
                "1",
                "--flip",
                "alternate",
                "--pad-mode",
                "reflect",
            )
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = json.loads((out / "config.json").read_text())["finetune"]
    assert cfg["flip"] == "alternate" and cfg["pad_mode"] == "reflect"  # the augmentation flags reach the saved recipe
    report = (out / "report.md").read_text()
    assert "px reflected padding" in report and "the flips alternate" in report
    assert "probe" not in metrics and "comparison" not in metrics
    # ResNet-18's layer4 (8 393 728) plus the new head (5 130); the other 2.8 M parameters stay frozen
    assert metrics["finetune"]["trainable_parameters"] == 8_398_858 < metrics["finetune"]["total_parameters"]


def test_freeze_stages_reaches_metrics_and_report_and_a_bad_count_stops_before_the_probe(cifar_root, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(args_for(cifar_root, out, tmp_path, "--freeze-stages", "2", "--no-probe", "--epochs", "1")) == 0
    ft = json.loads((out / "metrics.json").read_text())["finetune"]
    assert ft["frozen_stages"] == ["conv1", "bn1", "layer1"]
    # ResNet-18 without its stem (9 536) and layer1 (147 968), with the new head (5 130)
    assert ft["trainable_parameters"] == 11_689_512 - 1000 * 513 - 9_536 - 147_968 + 5_130
    assert "every layer after `conv1`, `bn1`, `layer1` (frozen" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(args_for(cifar_root, tmp_path / "bad", tmp_path, "--freeze-stages", "5")) == 2
    captured = capsys.readouterr()
    assert (
        "embedlab: error: --freeze-stages must be in 0..4 for resnet18" in captured.err and "[1A]" not in captured.out
    )


def test_bad_settings_and_resume_of_a_non_finetune_run_are_messages(cifar_root, tmp_path, capsys):
    assert main(args_for(cifar_root, tmp_path / "a", tmp_path, "--lr", "-1")) == 2
    assert "--lr -1.0: input should be greater than 0" in capsys.readouterr().err
    assert main(args_for(cifar_root, tmp_path / "b", tmp_path, "--batch-size", "1000", "--no-probe")) == 2
    assert "lower --batch-size" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"movies": {}}')
    assert main(["vision", "finetune", "--resume", str(tmp_path / "m")]) == 2
    assert "was not made by 'embedlab vision finetune'" in capsys.readouterr().err


def test_test_size_evaluates_at_it_with_batch_norm_statistics_recomputed_there(cifar_root, tmp_path):
    """The saved test probabilities are the checkpoint's network's at 40 px (resized as the extraction resizes), both
    views; the checkpoint holds the statistics recomputed there (tests/vision/test_fixres.py checks how)."""
    import pickle

    import torch
    import torchvision

    from embedlab.vision.features import preprocess

    out = tmp_path / "fixres"
    flags = ["--train-scope", "last", "--no-probe", "--epochs", "1", "--test-size", "40", "--runtime", "torch"]
    flags += ["--tta-shifts", "0"]  # the mirror views alone, as below
    assert main(args_for(cifar_root, out, tmp_path, *flags)) == 0
    saved = np.load(out / "artefacts" / "finetune_test_probs.npz")
    net = torchvision.models.resnet18(num_classes=10)
    state = torch.load(out / "artefacts" / "finetune_checkpoint.pt", weights_only=True)["model"]
    net.load_state_dict(state)
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in pickle.load(f, encoding="bytes").items()}
    x = torch.from_numpy(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)[saved["test_index"]])
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        x40 = preprocess(x, 40, mean, std)
        probs = (net.eval()(x40).softmax(1) + net(preprocess(x.flip(-1), 40, mean, std)).softmax(1)) / 2
    np.testing.assert_allclose(saved["probs"], probs.numpy(), atol=1e-5)
    cfg = json.loads((out / "config.json").read_text())["finetune"]
    assert cfg["test_size"] == 40
    metrics = json.loads((out / "metrics.json").read_text())["finetune"]
    assert metrics["runtime"] == "torch"


def test_the_log_says_what_is_frozen_and_what_is_trained_without_contradiction(cifar_root, tmp_path, capsys):
    out = tmp_path / "words"
    assert main(args_for(cifar_root, out, tmp_path, "--no-probe", "--epochs", "1", "--freeze-stages", "2")) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("[1C] fine-tuning"))
    assert "(none, the stem and the first stage frozen, the rest trained," in line
    assert "all layers" not in line
