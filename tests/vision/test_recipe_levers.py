"""The fine-tuning recipe's levers: progressive resizing, a moving average of the weights, LP-FT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_finetune import CPU, INPUTS, Tiny, cfg, synthetic
from torch import nn

from embedlab.config import FinetuneConfig
from embedlab.errors import InputError, MissingFileError
from embedlab.overrides import apply_overrides
from embedlab.runs import RunDir
from embedlab.store import Store, load, save
from embedlab.vision.finetune import Job, load_checkpoint, train
from embedlab.vision.probe import LogisticRegression, fit_probe
from embedlab.vision.recipe import epoch_size, epoch_steps, make_ema, train_pixels
from embedlab.vision.steps_1c import init_head_from_probe, resolve_head_init


def test_progressive_sizes_rise_linearly_to_the_final_size():
    assert [epoch_size(128, 96, e, 3) for e in range(3)] == [96, 112, 128]
    assert [epoch_size(128, None, e, 3) for e in range(3)] == [128, 128, 128]
    assert epoch_size(158, 96, 0, 1) == 158  # one epoch: the final size
    assert train_pixels(112, None, 2, 1000, 1) == 2 * 1000 * 112**2
    assert train_pixels(136, 80, 2, 1000, 1) == 1000 * (80**2 + 136**2)  # within the 2 x 112 px budget
    assert train_pixels(136, 80, 2, 1000, 1) <= train_pixels(112, None, 2, 1000, 1)
    assert train_pixels(112, None, 1.5, 10, 64) == 15 * 64 * 112**2  # half a pass more


@pytest.mark.parametrize(
    ("epochs", "per_epoch", "steps"),
    [
        (2, 703, [703, 703]),
        (1.75, 703, [703, 527]),
        (1, 5, [5]),
        (2.5, 5, [5, 5, 2]),
        (0.01, 10, [1]),
        (3.0, 4, [4] * 3),
    ],
)
def test_a_fractional_epoch_count_ends_the_last_pass_early(epochs, per_epoch, steps):
    """Whole passes, then the nearest whole number of the last pass's batches (at least one): round(epochs x steps)
    in all when the last share is not tiny."""
    assert epoch_steps(epochs, per_epoch) == steps
    if epochs >= 1:
        assert sum(steps) == round(epochs * per_epoch)


def test_each_epoch_trains_at_its_own_size(tmp_path: Path):
    seen: list[int] = []
    m = Tiny()
    m.body[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[-1]) if mod.training else None)
    h = train(
        m, m.head, synthetic(40, 0), synthetic(20, 1), Job(cfg(epochs=2, start_size=8), INPUTS, CPU, tmp_path / "ck.pt")
    )
    assert sorted(set(seen)) == [8, 16] and seen[0] == 8 and seen[-1] == 16
    assert [e["train_size"] for e in h.epochs] == [8, 16]


def test_the_moving_average_matches_a_hand_computed_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = make_ema(model, 0.5, 8)  # decay 1 - 1 / 4 = 0.75, warmed up as (1 + n) / (10 + n)
    assert ema is not None and make_ema(model, 0.0, 8) is None
    expected = model[0].weight.detach().clone()
    for n in range(6):
        if n:
            with torch.no_grad():
                model[0].weight.add_(torch.randn(2, 3))
            model(torch.randn(4, 3))  # moves BatchNorm's running statistics and its integer batch counter
            d = min(0.75, (1 + n) / (10 + n))  # n updates already averaged in
            expected = d * expected + (1 - d) * model[0].weight.detach()
        ema.update_parameters(model)
    assert torch.allclose(ema.module[0].weight, expected, atol=1e-6)
    assert int(ema.module[1].num_batches_tracked) == int(model[1].num_batches_tracked) == 5
    assert not torch.equal(ema.module[1].running_mean, model[1].running_mean)  # averaged, not copied


def test_with_a_moving_average_resume_is_exact_and_the_average_is_what_is_kept(tmp_path: Path):
    train_xy, val_xy = synthetic(60, 0), synthetic(20, 1)
    full = Tiny()
    h_full = train(full, full.head, train_xy, val_xy, Job(cfg(ema=0.3), INPUTS, CPU, tmp_path / "full.pt"))
    saved = load_checkpoint(tmp_path / "full.pt")
    assert saved["recipe"]["ema"] == 0.3
    for name, value in full.state_dict().items():  # the model now holds the average, not the last weights
        assert torch.equal(value, saved["ema"][f"module.{name}"])
    assert not torch.equal(full.head.weight, saved["model"]["head.weight"])

    part = Tiny()

    def stop_in_epoch_two(epoch: int, step: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            part,
            part.head,
            train_xy,
            val_xy,
            Job(cfg(ema=0.3), INPUTS, CPU, tmp_path / "part.pt"),
            on_step=stop_in_epoch_two,
        )
    resumed = Tiny()
    h_res = train(
        resumed, resumed.head, train_xy, val_xy, Job(cfg(ema=0.3), INPUTS, CPU, tmp_path / "part.pt", resume=True)
    )
    assert h_res.step_loss == h_full.step_loss
    assert [e.get("val_accuracy") for e in h_res.epochs] == [e.get("val_accuracy") for e in h_full.epochs]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_checkpoint_without_the_average_is_refused_when_one_is_asked_for(tmp_path: Path):
    m = Tiny()
    train(m, m.head, synthetic(40, 0), synthetic(20, 1), Job(cfg(epochs=1), INPUTS, CPU, tmp_path / "ck.pt"))
    again = Tiny()
    with pytest.raises(InputError, match="another network, resolution or freeze"):
        train(
            again,
            again.head,
            synthetic(40, 0),
            synthetic(20, 1),
            Job(cfg(epochs=2, ema=0.2), INPUTS, CPU, tmp_path / "ck.pt", resume=True),
        )


def test_a_checkpoint_is_refused_by_a_run_that_freezes_other_stages(tmp_path: Path):
    m = Tiny()
    train(m, m.head, synthetic(40, 0), synthetic(20, 1), Job(cfg(epochs=1), INPUTS, CPU, tmp_path / "ck.pt"))
    again = Tiny()
    again.body[0].requires_grad_(False)  # its optimiser state would not fit the checkpoint's
    with pytest.raises(InputError, match="another network, resolution or freeze"):
        train(
            again,
            again.head,
            synthetic(40, 0),
            synthetic(20, 1),
            Job(cfg(epochs=2), INPUTS, CPU, tmp_path / "ck.pt", resume=True),
        )


def test_lp_ft_starts_the_head_as_the_probe_predicts(tmp_path: Path):
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(200, 8, generator=g) * 3 + 1, torch.arange(200) % 10
    probe = fit_probe(feats, labels, 1e-3, max_iter=50)
    run = RunDir.create(tmp_path / "run")
    torch.save(probe.model.state_dict(), run.artefact("probe_model_train_only.pt"))
    head = nn.Linear(8, 10)
    init_head_from_probe(head, Store(run).lp_ft_probe())
    with torch.no_grad():
        assert torch.allclose(head(feats), probe.model(feats), atol=1e-4)


def test_head_init_auto_means_the_probe_when_the_run_has_a_finished_probe(tmp_path: Path, make_result):
    """Decided from the run's probe result, not from which files happen to lie in the folder."""
    run = RunDir.create(tmp_path / "run")
    # a stray file decides nothing
    torch.save(LogisticRegression(8).state_dict(), run.artefact("probe_model_train_only.pt"))
    assert (
        resolve_head_init("auto", load(run).probe) == "random"
        and resolve_head_init("probe", load(run).probe) == "probe"
    )
    save(run, make_result.probe())
    assert (
        resolve_head_init("auto", load(run).probe) == "probe"
        and resolve_head_init("random", load(run).probe) == "random"
    )


def test_lp_ft_without_a_probe_or_with_another_backbones_probe_says_so(tmp_path: Path):
    run = RunDir.create(tmp_path / "run")
    with pytest.raises(MissingFileError, match="drop --no-probe"):
        Store(run).lp_ft_probe()
    torch.save(LogisticRegression(16).state_dict(), run.artefact("probe_model_train_only.pt"))
    with pytest.raises(InputError, match="same backbone"):
        init_head_from_probe(nn.Linear(8, 10), Store(run).lp_ft_probe())


def test_the_levers_are_validated_together():
    with pytest.raises(InputError) as err:
        apply_overrides(FinetuneConfig(), {"ema": 1.5, "head_init": "linear", "start_size": 8}, flags=True)
    text = str(err.value)
    assert "--ema" in text and "--head-init" in text and "--start-size" in text
    with pytest.raises(InputError, match="drop --no-probe"):
        FinetuneConfig(head_init="probe", probe=False).validate()


def test_the_time_estimate_counts_every_test_time_view(monkeypatch: pytest.MonkeyPatch):
    """Test-time augmentation evaluates every image once per view (mirror: 2, with one shift 4, with both 6), so the
    expected time grows by one more pass over the evaluated images per view."""
    import embedlab.vision.timing as timing

    monkeypatch.setattr(timing, "measure_train_throughput", lambda *a, **k: 10.0)
    args = (Tiny(), 16, CPU, 1000, 500)
    _, one_view = timing.expected_time(cfg(epochs=2, tta_flip=False, tta_shifts=0), *args)
    _, flipped = timing.expected_time(cfg(epochs=2, tta_flip=True, tta_shifts=0), *args)
    _, four = timing.expected_time(cfg(epochs=2, tta_flip=True, tta_shifts=1), *args)
    _, six = timing.expected_time(cfg(epochs=2, tta_flip=True, tta_shifts=2), *args)
    assert one_view == pytest.approx(2 * 1000 / 10 + 500 / 25)  # 2 epochs of training + one pass at 2.5x the speed
    assert flipped - one_view == pytest.approx(500 / 25)
    assert (four - one_view, six - one_view) == pytest.approx((3 * 500 / 25, 5 * 500 / 25))


@pytest.mark.parametrize(("seconds", "timed_batches"), [(0.0, 5), (4.0, 8), (4.1, 9)])
def test_the_extraction_estimate_is_the_rate_of_batches_timed_for_its_seconds(
    monkeypatch: pytest.MonkeyPatch, seconds, timed_batches
):
    """The printed extraction estimate: two warm-up batches untimed, then batches timed until ``seconds`` of them (five
    at least), cycling over the images; the estimate is their images by their time, whatever the warm-up took."""
    import embedlab.vision.timing as timing
    from embedlab.vision.features import ExtractStats

    calls: list[tuple[str, int]] = []

    def fake_extract(model, images, inputs, batch, device, desc, engine):
        calls.append((desc, len(images)))
        return torch.zeros(len(images), 1), ExtractStats(len(images), 0.5 if desc == "timing" else 50.0)

    monkeypatch.setattr(timing, "extract", fake_extract)
    images = torch.zeros(2 * 4 + 3 * 4 + 2, 3, 8, 8, dtype=torch.uint8)  # after the warm-up: 3 batches and one of 2
    ips = timing.measure_throughput(Tiny(), images, INPUTS, 4, CPU, seconds=seconds)
    assert calls[0] == ("warm-up", 8) and all(desc == "timing" for desc, _ in calls[1:])
    sizes = [n for _, n in calls[1:]]
    assert sizes == [4, 4, 4, 2, 4, 4, 4, 2, 4][:timed_batches]
    assert ips == pytest.approx(sum(sizes) / (0.5 * timed_batches))
