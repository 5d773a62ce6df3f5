"""``embedlab vision probe`` end to end on synthetic CIFAR batches written by the test."""

import json

import numpy as np

from embedlab.cli import main
from embedlab.report.common import MISSING


def test_probe_run_folder(cifar_root, tmp_path, capsys):
    out = tmp_path / "probe"
    args = [
        "vision",
        "probe",
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
        "--val-per-class",
        "5",
        "--offline",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--l2-grid",
        "0.001,0.1",
    ]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())["probe"]
    assert m["train_images"] == 250 and m["val_images"] == 50 and m["test_images"] == 100
    # the synthetic classes differ in colour, so even random features separate them (measured: 1.0)
    assert m["test_accuracy"] >= 0.9 and set(m["per_class_accuracy"]) == {
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    }
    for rel in [
        "figures/probe_gallery.png",
        "figures/probe_confusion.png",
        "figures/probe_l2_grid.png",
        "tables/probe_gallery.csv",
        "tables/probe_per_class.csv",
        "artefacts/probe_test_probs.npz",
        "report.md",
    ]:
        assert (out / rel).is_file(), rel
    z = np.load(out / "artefacts" / "probe_test_probs.npz")
    assert z["probs"].shape == (100, 10)
    assert "Part 1A" in (out / "report.md").read_text() and MISSING not in (out / "report.md").read_text()
    # the second run reads the cache
    out2 = tmp_path / "probe2"
    assert main([str(out2) if a == str(out) else a for a in args]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())["probe"]
    assert m2["features_cached"] is True and m2["test_accuracy"] == m["test_accuracy"]


def test_bad_backbone_and_missing_weights_are_messages(cifar_root, tmp_path, capsys):
    assert (
        main(["vision", "probe", "--data-dir", str(cifar_root), "--out", str(tmp_path / "o"), "--backbone", "vgg"]) == 2
    )
    assert "unknown backbone 'vgg'" in capsys.readouterr().err
    assert (
        main(
            [
                "vision",
                "probe",
                "--data-dir",
                str(cifar_root),
                "--out",
                str(tmp_path / "o2"),
                "--weights",
                str(tmp_path / "nope.pth"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
