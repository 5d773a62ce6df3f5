"""The fine-tuning loop on tiny synthetic data: a step lowers the loss, resume is exact, Ctrl-C keeps the checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_finetune import CPU, INPUTS, Tiny, cfg, synthetic
from torch import nn

from embedlab.config import FinetuneConfig
from embedlab.overrides import apply_overrides
from embedlab.runs import RunDir
from embedlab.store import Store, load, save
from embedlab.vision.backbones import create_backbone
from embedlab.vision.finetune import Job, TrainingInterrupted, load_checkpoint, train
from embedlab.vision.pipeline import run_comparison
from embedlab.vision.recipe import alternating_flips, augment, finetune_optimizer, param_groups, warmup_cosine


def test_augment_crops_and_flips_within_the_padded_image():
    x, _ = synthetic(8, 0)
    g = torch.Generator().manual_seed(1)
    flipped_only = augment(x, 0, g)
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(flipped_only, x))
    out = augment(x, 4, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    offsets = []
    for a, p in zip(out, padded):  # brute force: the one window (and orientation) of the padded image it came from
        found = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (False, True)
            if torch.equal(a, p[:, dy : dy + 32, dx : dx + 32].flip(-1) if f else p[:, dy : dy + 32, dx : dx + 32])
        ]
        assert found, "an augmented image is not a crop of its padded original"
        offsets.append(found[0][:2])
    assert len(set(offsets)) > 1  # the crops move


def test_alternating_flips_show_every_image_both_ways_round_in_two_epochs():
    first, second, third = (alternating_flips(1000, 3, e) for e in range(3))
    assert torch.equal(first, ~second) and torch.equal(first, third)
    assert 400 < int(first.sum()) < 600  # about half of the images start mirrored
    assert torch.equal(first, alternating_flips(1000, 3, 0)) and not torch.equal(first, alternating_flips(1000, 4, 0))


def test_given_flips_are_obeyed_and_the_crops_stay_those_of_the_coin_toss_run():
    x, _ = synthetic(16, 0)
    flips = torch.arange(16) % 3 == 0
    coin = augment(x, 4, torch.Generator().manual_seed(5))
    given = augment(x, 4, torch.Generator().manual_seed(5), flips)
    g = torch.Generator().manual_seed(5)  # replay augment's draws: the crops first, then the coin tosses
    torch.randint(0, 9, (16, 2), generator=g)
    drawn = torch.rand(16, generator=g) < 0.5
    assert drawn.tolist() != flips.tolist()  # so the test can tell the two apart
    for a, b, f, d in zip(given, coin, flips.tolist(), drawn.tolist()):
        assert torch.equal(a, b if f == d else b.flip(-1))


def test_reflect_padding_crops_from_the_mirrored_border():
    x = synthetic(8, 0)[0].clamp(min=1)  # no black pixel of its own, so any in the output is padding
    out = augment(x, 4, torch.Generator().manual_seed(2), torch.zeros(8, dtype=torch.bool), "reflect")
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    for a, p in zip(out, padded):  # brute force: the unflipped window of the reflected image it came from
        assert any(torch.equal(a, p[:, dy : dy + 32, dx : dx + 32]) for dy in range(9) for dx in range(9))
    assert not (out == 0).all(dim=1).any()  # no black border pixels, unlike zero padding


def test_the_cpu_recipe_is_adamw_with_decoupled_decay_on_weights_only():
    m = Tiny()
    recipe = FinetuneConfig()
    opt = finetune_optimizer(recipe, param_groups(m, m.head, recipe.lr, recipe.weight_decay, recipe.backbone_lr_scale))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 1e-3
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {
        "backbone": 5e-4,
        "backbone (no decay)": 0.0,
        "head": 5e-4,
        "head (no decay)": 0.0,
    }
    assert isinstance(finetune_optimizer(cfg(), param_groups(m, m.head, 0.1, 5e-4, 1.0)), torch.optim.SGD)


def test_param_groups_skip_decay_on_norm_and_bias_and_scale_the_backbone_lr():
    m = Tiny()
    groups = {g["name"]: g for g in param_groups(m, m.head, 0.1, 5e-4, 0.1)}
    assert groups["head"]["lr"] == 0.1 and groups["backbone"]["lr"] == pytest.approx(0.01)
    assert groups["backbone (no decay)"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 5e-4
    assert all(p.ndim <= 1 for p in groups["backbone (no decay)"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(m.parameters()))


def test_warmup_then_cosine():
    f = warmup_cosine(100, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(99) < 0.01
    assert all(f(i) >= f(i + 1) for i in range(10, 99))


def test_one_optimisation_step_lowers_the_loss(tmp_path: Path):
    x, y = synthetic(40, 0)
    model = Tiny()
    from embedlab.vision.features import preprocess

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(
                nn.functional.cross_entropy(
                    model(preprocess(x, 16, torch.tensor(INPUTS.mean), torch.tensor(INPUTS.std))), y
                )
            )

    before = loss()
    train(
        model,
        model.head,
        (x, y),
        (x, y),
        Job(
            cfg(epochs=1, batch_size=40, pad=0, label_smoothing=0.0, warmup_fraction=0.0, lr=0.1),
            INPUTS,
            CPU,
            tmp_path / "ck.pt",
        ),
    )
    model.train()  # one step in train mode also moved the BatchNorm running statistics; compare like with like
    assert loss() < before


@pytest.mark.parametrize(
    "recipe", [{}, {"optimizer": "adamw", "lr": 0.01}, {"flip": "alternate"}], ids=["sgd", "adamw", "alternate-flips"]
)
def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path: Path, recipe: dict):
    """For both optimisers: AdamW's moment estimates, like SGD's momentum, travel in the checkpoint; and alternating
    flips, which depend on the epoch alone, resume in step."""
    train_xy, val_xy = synthetic(60, 0), synthetic(30, 1)
    full = Tiny()
    h_full = train(full, full.head, train_xy, val_xy, Job(cfg(**recipe), INPUTS, CPU, tmp_path / "full.pt"))

    def stop_in_epoch_two(epoch: int, step: int) -> None:
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt

    part = Tiny()
    ck = tmp_path / "part.pt"
    with pytest.raises(TrainingInterrupted, match="last complete checkpoint \\(after epoch 1\\)"):
        train(part, part.head, train_xy, val_xy, Job(cfg(**recipe), INPUTS, CPU, ck), on_step=stop_in_epoch_two)
    saved = load_checkpoint(ck)
    assert saved["epoch"] == 1 and len(saved["history"]["step_loss"]) == 3
    assert not ck.with_suffix(".tmp").exists()

    torch.manual_seed(123)  # a different global RNG state: resume must restore the saved one
    resumed = Tiny()
    h_res = train(resumed, resumed.head, train_xy, val_xy, Job(cfg(**recipe), INPUTS, CPU, ck, resume=True))
    assert h_res.step_loss == h_full.step_loss
    assert [e.get("val_accuracy") for e in h_res.epochs] == [e.get("val_accuracy") for e in h_full.epochs]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert h_full.step_loss[-1] < h_full.step_loss[0]


def test_a_cpu_validates_the_last_epoch_only_and_trains_the_same_either_way(tmp_path: Path):
    """Validation is read by nothing in the schedule, so skipping it changes no weight and no loss."""
    train_xy, val_xy = synthetic(60, 0), synthetic(30, 1)
    runs = {}
    for when in ("auto", "epoch", "end"):
        m = Tiny()
        h = train(m, m.head, train_xy, val_xy, Job(cfg(epochs=3, validation=when), INPUTS, CPU, tmp_path / when))
        runs[when] = h, m.state_dict()
    validated = {k: [e["epoch"] for e in h.epochs if "val_accuracy" in e] for k, (h, _) in runs.items()}
    assert validated == {"auto": [3], "epoch": [1, 2, 3], "end": [3]}
    (h_end, w_end), (h_every, w_every) = runs["end"], runs["epoch"]
    assert h_end.step_loss == h_every.step_loss and h_end.epochs[-1] == h_every.epochs[-1] | {
        k: h_end.epochs[-1][k] for k in ("train_seconds", "train_images_per_second", "val_images_per_second")
    }
    assert all(torch.equal(w_end[k], w_every[k]) for k in w_end)


def test_a_fractional_last_epoch_trains_its_share_of_batches_and_ends_the_schedule(tmp_path: Path):
    """1.5 epochs of 3 batches: 3 + 2 steps, the warm-up + cosine schedule stretched over those 5 and ending at 0, one
    validation after the shortened pass; the first pass draws the same batches as in a 2-epoch run."""
    train_xy, val_xy = synthetic(60, 0), synthetic(30, 1)
    lrs: list[float] = []
    m = Tiny()
    job = Job(cfg(epochs=1.5, optimizer="adamw", lr=1e-3), INPUTS, CPU, tmp_path / "a.pt")
    h = train(m, m.head, train_xy, val_xy, job, on_step=lambda e, s: lrs.append(e))
    assert len(h.step_loss) == 5 and lrs == [0, 0, 0, 1, 1]
    assert (
        [e["epoch"] for e in h.epochs] == [1, 2]
        and "val_accuracy" in h.epochs[-1]
        and "val_accuracy" not in h.epochs[0]
    )
    assert h.epochs[-1]["train_accuracy"] <= 1 and h.epochs[-1]["train_images_per_second"] > 0
    state = load_checkpoint(tmp_path / "a.pt")
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 5
    assert state["optimizer"]["param_groups"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine's end


def test_interrupt_before_the_first_epoch_says_there_is_no_checkpoint(tmp_path: Path):
    m = Tiny()

    def stop(epoch: int, step: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="no checkpoint yet"):
        train(m, m.head, synthetic(40, 0), synthetic(20, 1), Job(cfg(), INPUTS, CPU, tmp_path / "ck.pt"), on_step=stop)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        load_checkpoint(tmp_path / "ck.pt")


def test_a_diverging_loss_stops_with_advice(tmp_path: Path):
    from embedlab.vision.finetune import TrainingDiverged

    m = Tiny()
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        train(
            m,
            m.head,
            synthetic(40, 0),
            synthetic(20, 1),
            Job(cfg(lr=1e30, warmup_fraction=0.0, epochs=2), INPUTS, CPU, tmp_path / "ck.pt"),
        )


def test_train_scope_last_freezes_all_but_the_last_stage_and_head():
    b = create_backbone("resnet18", "none")
    model, head, trained = b.with_new_head(10, "last")
    assert trained == ("layer4", "fc") and head.out_features == 10
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"layer4", "fc"}


def test_freeze_stages_freezes_the_stem_and_the_first_stages_only(tmp_path: Path):
    from embedlab.vision.recipe import set_train_mode

    b = create_backbone("resnet18", "none")
    model, head, trained = b.with_new_head(10, "all", freeze_stages=2)  # the stem and layer1
    assert trained == ("layer2", "layer3", "layer4", "fc")
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    set_train_mode(model, trained)
    assert not model.bn1.training and not model.layer1.training and model.layer2.training
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("conv1", "bn1", "layer1"))}
    x, y = synthetic(8, 0)
    nn.functional.cross_entropy(model(x.float() / 255), y).backward()
    assert model.conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is not None  # no backward pass there
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nor BatchNorm statistics updated
    with pytest.raises(ValueError, match=r"--freeze-stages must be in 0\.\.4 for resnet18"):
        create_backbone("resnet18", "none").with_new_head(10, "all", freeze_stages=5)
    with pytest.raises(ValueError, match="--freeze-stages goes with --train-scope all"):
        cfg(freeze_stages=2, train_scope="last").validate()


def _save_both(run: RunDir, make_result, probe_acc: float, ft_acc: float) -> None:
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    save(run, make_result.probe(probe_acc))
    save(run, make_result.finetune(ft_acc, {c: ft_acc + (0.01 if c == "cat" else 0.0) for c in classes}))


def test_comparison_table_from_saved_results(tmp_path: Path, make_result):
    run = RunDir.create(tmp_path / "run")
    _save_both(run, make_result, 0.85, 0.94)
    run_comparison(Store(run))
    table = Store(run).table("comparison")
    assert list(table["test_accuracy"]) == [0.85, 0.94]
    assert list(table["train_wall_seconds"]) == [610.0, 2760.0]
    assert list(table["train_images_per_second"]) == [80.0, 50.0] and list(table["test_images_per_second"]) == [
        85.0,
        200.0,
    ]
    m = json.loads((run.path / "metrics.json").read_text())["comparison"]
    assert (
        m["accuracy_gain"] == pytest.approx(0.09)
        and m["error_reduction"] == pytest.approx(0.6)
        and m["classes_improved"] == 10
    )
    per_class = pd.read_csv(run.path / "tables" / "comparison_per_class.csv")
    saved = load(run)
    fixed_pc, tuned_pc = saved.probe.fit.evaluation.per_class_accuracy, saved.finetune.evaluation.per_class_accuracy
    assert list(per_class["class"]) == list(fixed_pc)  # every class, in the label order
    for rec in per_class.to_dict("records"):
        fixed, tuned = fixed_pc[rec["class"]], tuned_pc[rec["class"]]
        assert (rec["fixed_features"], rec["fine_tuned"]) == (fixed, tuned) and rec["gain"] == pytest.approx(
            tuned - fixed
        )
    assert (run.path / "figures" / "comparison_per_class.png").is_file()


def test_comparison_needs_both_studies(tmp_path: Path, make_result):
    run = RunDir.create(tmp_path / "run")
    save(run, make_result.probe(0.8))
    with pytest.raises(ValueError, match="no finished finetune"):
        run_comparison(Store(run))


def test_bad_recipe_settings_are_rejected_together():
    with pytest.raises(ValueError) as err:
        apply_overrides(
            cfg(),
            dict(optimizer="lamb", schedule="step", lr=0.0, train_scope="half", flip="sometimes", pad_mode="wrap"),
            flags=True,
        )
    for text in ("--optimizer", "--schedule", "--lr", "--train-scope", "--flip", "--pad-mode"):
        assert text in str(err.value)


def test_flip_tta_averages_an_image_and_its_mirror(tmp_path: Path):
    from embedlab.vision.recipe import Views, predict

    x, y = synthetic(30, 2)
    x[:, :, :, :16] = 0  # left half dark: the mirror image is a different input
    model = Tiny().eval()
    plain, _, same = predict(model, x, INPUTS, 16, "t")
    assert same is plain
    mirrored, _, _ = predict(model, x.flip(-1), INPUTS, 16, "t")
    both, _, one_view = predict(model, x, INPUTS, 16, "t", Views(flip=True))
    torch.testing.assert_close(both, (plain + mirrored) / 2)
    torch.testing.assert_close(one_view, plain)
    assert not torch.allclose(plain, mirrored)
    h = train(
        model,
        model.head,
        (x, y),
        (x, y),
        Job(cfg(epochs=1, batch_size=10, tta_flip=True), INPUTS, CPU, tmp_path / "ck.pt"),
    )
    assert {"val_accuracy", "val_accuracy_one_view"} <= set(h.epochs[0])


def reflected_shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Brute force: pixel (i, j) of the result is pixel (i - dy, j - dx) of ``x``, indices reflected at the border."""

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    n_rows, n_cols = x.shape[-2:]
    out = torch.empty_like(x)
    for i in range(n_rows):
        for j in range(n_cols):
            out[..., i, j] = x[..., reflect(i - dy, n_rows), reflect(j - dx, n_cols)]
    return out


@pytest.mark.parametrize("shifts", [0, 1, 2])
def test_shift_tta_averages_the_views_moved_a_pixel_diagonally_and_mirrored(shifts: int):
    from embedlab.vision.recipe import Views, predict, tta_views

    x, _ = synthetic(20, 3)
    x[:, :, :, :16] = 0
    moved = [x, reflected_shift(x, 1, 1), reflected_shift(x, -1, -1)][: 1 + shifts]
    expected = [*moved, *(v.flip(-1) for v in moved)]
    views = tta_views(x, Views(True, shifts))
    assert len(views) == 2 * (1 + shifts) and len({name for name, _ in views}) == len(views)
    for (_, view), want in zip(views, expected):
        assert torch.equal(view, want)
    assert [torch.equal(v, w) for (_, v), w in zip(tta_views(x, Views(False, shifts)), moved)] == [True] * len(moved)
    model = Tiny().eval()
    separately = [predict(model, view, INPUTS, 16, "t")[0] for view in expected]
    averaged, _, one_view = predict(model, x, INPUTS, 16, "t", Views(flip=True, shifts=shifts))
    torch.testing.assert_close(averaged, torch.stack(separately).mean(0))
    torch.testing.assert_close(one_view, separately[0])
    assert not torch.allclose(separately[1], separately[0])


def test_the_paired_comparison_uses_the_test_images_both_models_saw(tmp_path: Path, make_result):
    """A subsampled run tests fine-tuning on fewer images than the probe: the counts are over the images in common."""
    import numpy as np

    from embedlab.files import npz_bytes

    run = RunDir.create(tmp_path / "run")
    _save_both(run, make_result, 0.85, 0.94)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 40)
    probe_probs, ft_probs = rng.random((40, 10)), rng.random((40, 10))
    run.save_artefact(
        "probe_test_probs.npz", npz_bytes(probs=probe_probs, labels=labels, test_index=np.arange(100, 140))
    )
    keep = np.arange(0, 40, 2)  # fine-tuning tested on every other image, in another order
    order = keep[::-1]
    run.save_artefact(
        "finetune_test_probs.npz", npz_bytes(probs=ft_probs[order], labels=labels[order], test_index=100 + order)
    )
    run_comparison(Store(run))
    m = json.loads((run.path / "metrics.json").read_text())["comparison"]
    right_p, right_f = probe_probs[keep].argmax(1) == labels[keep], ft_probs[keep].argmax(1) == labels[keep]
    assert m["paired_images"] == 20
    assert (m["fixed"], m["broken"], m["both_wrong"]) == (
        int((~right_p & right_f).sum()),
        int((right_p & ~right_f).sum()),
        int((~right_p & ~right_f).sum()),
    )
    from embedlab.report import write_report
    from embedlab.text import p_value

    run.update_config("probe", {})
    run.update_config("finetune", {})
    text = " ".join(write_report(run).read_text().split())  # the p-value reads as everywhere else
    assert f"gives p = {p_value(m['mcnemar_p'])}" in text and not re.search(r"\de-\d", text)
    labels_edited = labels[order].copy()
    labels_edited[0] = (labels_edited[0] + 1) % 10
    run.save_artefact(
        "finetune_test_probs.npz", npz_bytes(probs=ft_probs[order], labels=labels_edited, test_index=100 + order)
    )
    with pytest.raises(ValueError, match="other labels"):
        run_comparison(Store(run))


def test_the_comparison_reads_right_when_fine_tuning_loses(tmp_path: Path, make_result):
    """The smoke run's case: fine-tuning below the probe, one class far down. The text follows the sign (fewer or more
    errors), and "largest" and "smallest" go by the size of a class's change, not its signed gain."""
    from embedlab.report import write_report

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    probe = {c: 0.658 for c in classes}
    tuned = {**{c: 0.62 for c in classes}, "bird": 0.30, "ship": 0.66}  # bird: -35.8 points; ship: +0.2
    run = RunDir.create(tmp_path / "run")
    run.update_config("probe", {})
    run.update_config("finetune", {})
    save(run, make_result.probe(0.658, probe, extract_train_seconds=3.0))  # a smoke run's probe takes seconds
    save(run, make_result.finetune(0.62, tuned))
    run_comparison(Store(run))
    text = " ".join(write_report(run).read_text().split())
    assert "Fine-tuning was **less accurate than** the logistic regression" in text
    assert "(-3.80 points, 11 % more test errors)" in text and "fewer test errors" not in text
    assert "the largest change is *bird* (65.8 → 30.0 %), the smallest *ship* (65.8 → 66.0 %)" in text
    assert re.search(r"\(the probe: \d+\.\d s at", text) and not re.search(r"(?<![\d.])0\.0 min", text)
    # one format per quantity: every accuracy, in the text and in the tables, as a percentage; nothing reads "nan"
    assert not re.search(r"(?<![\d.])0\.(658|62|30|66)0*(?!\d)", text) and "65.80 %" in text and "30.00 %" in text
    assert not re.search(r"\bnan\b", text, re.I)
    # counts with thousands separators, p-values in one notation (never "1e-05")
    prose = re.sub(r"`[^`]*`|```.*?```", "", text)  # code keeps Python's spelling: nn.Linear(1280, 10)
    assert not re.search(r"(?<![\d.,])\d{4,}\b", prose)
    assert not re.search(r"\de-\d", text)
