"""Part 1's step outputs built in memory (no run folder, no network) from random predictions on random images, checked
against brute force: the evaluation's accuracy, per-class table and confusion matrix counted image by image, the
gallery's rows traced back to their test images, the comparison's fixed/broken counts and exact McNemar p-value; and
predictions that pass from one step to the next without the disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from embedlab.results import ProbeResult
from embedlab.runs import RunDir
from embedlab.store import Output, Predictions, Store
from embedlab.vision.cifar10 import CLASSES, Cifar10
from embedlab.vision.steps import evaluation_output, gallery_output
from embedlab.vision.steps_1c import step_compare

N = 300  # test images; the steps see a subsample of 200 of them


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    data = Cifar10(
        train_x=torch.zeros(0, 3, 32, 32, dtype=torch.uint8),
        train_y=torch.zeros(0, dtype=torch.int64),
        test_x=torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g),
        test_y=torch.randint(0, 10, (N,), generator=g),
    )
    idx = torch.sort(torch.randperm(N, generator=g)[:200]).values
    labels = data.test_y[idx]
    # two models right about 60 % and 80 % of the time
    probs = []
    for right in (0.6, 0.8):
        logits = torch.randn(len(idx), 10, generator=g)
        hit = torch.rand(len(idx), generator=g) < right
        logits[hit, labels[hit]] += 4
        probs.append(logits.softmax(1))
    return data, idx, labels, probs


def test_evaluation_counts_every_image(case):
    _, _, labels, (probs, _) = case
    evaluation, out = evaluation_output("probe", probs, labels, "title")
    pred = probs.argmax(1).tolist()
    truth = labels.tolist()
    assert evaluation.test_accuracy == pytest.approx(np.mean([p == t for p, t in zip(pred, truth)]))
    cm = np.zeros((10, 10), dtype=int)
    for p, t in zip(pred, truth):
        cm[t, p] += 1
    assert out.tables["probe_confusion"].df[list(CLASSES)].to_numpy().tolist() == cm.tolist()
    per_class = out.tables["probe_per_class"].df
    for c, name in enumerate(CLASSES):
        expected = cm[c, c] / cm[c].sum() if cm[c].sum() else 0.0
        assert per_class.loc[per_class["class"] == name, "accuracy"].item() == pytest.approx(expected, abs=5e-5)
        assert evaluation.per_class_accuracy[name] == pytest.approx(expected)
    assert set(out.figures) == {"probe_confusion"}


def test_each_gallery_row_is_the_test_image_it_names(case):
    data, idx, labels, (probs, _) = case
    out = gallery_output(ProbeResult, "probe_gallery", probs, data, idx, 3, "title")
    table = out.tables["probe_gallery"].df
    conf = probs.max(1).values
    for true_label, kind in {(r.true_label, r.kind) for r in table.itertuples()}:
        rows = table[(table["true_label"] == true_label) & (table["kind"] == kind)]
        c = CLASSES.index(true_label)
        pos = [p for p in range(len(idx)) if labels[p] == c and (probs[p].argmax() == c) == (kind == "correct")]
        best = sorted(pos, key=lambda p: (-float(conf[p]), p))[:3]  # most confident first, the lower index on a tie
        assert rows["test_index"].tolist() == [int(idx[p]) for p in best]
        assert rows["pred_label"].tolist() == [CLASSES[int(probs[p].argmax())] for p in best]
        assert rows["prob"].tolist() == pytest.approx([float(conf[p]) for p in best])
        assert all(data.test_y[int(i)] == c for i in rows["test_index"])


def test_the_comparison_counts_the_images_fine_tuning_fixed_and_broke(case, make_result):
    _, idx, labels, (probe_probs, ft_probs) = case
    probe = Predictions(probe_probs, labels, idx.numpy(), "probe")
    # fine-tuning tested on a subset: the comparison pairs the images both saw
    keep = torch.arange(0, len(idx), 2)
    finetune = Predictions(ft_probs[keep], labels[keep], idx.numpy()[keep.numpy()], "finetune")
    out = step_compare(make_result.probe(0.6), make_result.finetune(0.8), probe, finetune)
    (result,) = out.results
    a, b, y = probe_probs[keep].argmax(1), ft_probs[keep].argmax(1), labels[keep]
    fixed = sum(int(a[i] != y[i] and b[i] == y[i]) for i in range(len(y)))
    broken = sum(int(a[i] == y[i] and b[i] != y[i]) for i in range(len(y)))
    assert (result.paired_images, result.fixed, result.broken) == (len(keep), fixed, broken)
    assert result.mcnemar_p == pytest.approx(binomtest(fixed, fixed + broken, 0.5).pvalue)
    changes = out.tables["comparison_changes"].df.set_index("class")
    for c, name in enumerate(CLASSES):
        mine = [i for i in range(len(y)) if y[i] == c]
        assert changes.loc[name, "fixed"] == sum(int(a[i] != y[i] and b[i] == y[i]) for i in mine)
    assert result.accuracy_gain == pytest.approx(0.2)

    without = step_compare(make_result.probe(0.6), make_result.finetune(0.8), probe, None)
    assert "comparison_changes" not in without.tables and without.results[0].paired_images is None


def test_predictions_pass_in_memory_and_the_folder_holds_the_same(case, tmp_path):
    _, idx, labels, (probs, _) = case
    run = RunDir.create(tmp_path / "run")
    run.update_config("probe", {})
    store = Store(run)
    predictions = Predictions(probs, labels, idx.numpy(), "the probe's predictions")
    store.write(Output(owner=ProbeResult, artefacts={"probe_test_probs.npz": predictions}))
    assert store.predictions("probe") is predictions  # this process wrote them: no read
    read = Store(RunDir.open(run.path)).predictions("probe")  # another process (a resumed run) reads the file
    assert torch.equal(read.probs, probs) and torch.equal(read.labels, labels)
    assert np.array_equal(read.test_index, idx.numpy()) and read.source.endswith("probe_test_probs.npz")
    assert Store(RunDir.open(run.path)).predictions("finetune") is None


def test_cifar10_is_read_once_while_its_files_stay_the_same(cifar_root, caplog):
    import logging
    import os

    from embedlab.config import ProbeConfig
    from embedlab.vision.steps import load_splits

    cfg = ProbeConfig(data_dir=str(cifar_root), offline=True, val_per_class=2, train_per_class=10, test_per_class=5)
    with caplog.at_level(logging.INFO):
        first, again = load_splits(cfg)[0], load_splits(cfg)[0]  # the probe, then fine-tuning
    assert again is first and caplog.text.count("reading and verifying") == 1
    test_batch = cifar_root / "cifar-10-batches-py" / "test_batch"
    os.utime(test_batch, ns=(0, test_batch.stat().st_mtime_ns + 1))  # a file replaced: read and verified again
    assert load_splits(cfg)[0] is not first


def test_the_log_names_the_frozen_stages_as_the_docs_do():
    from embedlab.vision.steps_1c import frozen_words

    assert [frozen_words(k) for k in (1, 2, 3)] == [
        "the stem",
        "the stem and the first stage",
        "the stem and the first 2 stages",
    ]
