"""Fine-tuning under torch.distributed: 2 gloo processes give the single-process loss history; an
interrupt or a dead rank leaves a checkpoint that 2 processes resume from exactly.

The test network has no BatchNorm: with BatchNorm each rank normalises its half of the batch (DDP's
default, and this project's choice: SyncBatchNorm needs GPU modules), so a 2-process run is then a
different — equally valid — computation, not the same one. Without it, the mean of the two half-batch
gradients is the full batch's gradient and the runs differ only in float32 summation order (measured:
2e-7 relative over 9 steps), so the tolerance is 1e-5.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from tiny_finetune import INPUTS, Tiny, cfg, synthetic
from torch import nn


def _model() -> nn.Module:
    model = Tiny()
    model.body[1] = nn.Identity()  # no BatchNorm: see the module docstring
    return model


def _worker(rank: int, world: int, init: str, out: str, resume: bool, stop: str) -> None:
    import torch.distributed as tdist

    import embedlab.distributed as distributed
    from embedlab.distributed import Dist
    from embedlab.vision.finetune import Job, TrainingInterrupted, train

    tdist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)

    def on_step(epoch: int, step: int) -> None:
        if epoch == 1 and step == 1:
            if stop == "interrupt":
                raise KeyboardInterrupt
            if stop == "dead rank" and rank == 1:
                os._exit(3)  # a rank that dies mid-epoch, as a killed process would

    model = _model()
    distributed._JOB = Dist(rank, world, "gloo")  # the process group this worker set up is the job's
    try:
        h = train(
            model,
            model.head,
            synthetic(60, 0),
            synthetic(30, 1),
            Job(cfg(), INPUTS, torch.device("cpu"), Path(out) / "ck.pt", resume=resume),
            on_step=on_step,
        )
        if rank == 0:
            torch.save(
                {"loss": h.step_loss, "val": [e.get("val_accuracy") for e in h.epochs], "w": model.state_dict()},
                Path(out) / "h.pt",
            )
    except TrainingInterrupted as exc:
        (Path(out) / f"interrupted{rank}.txt").write_text(str(exc))
    finally:
        tdist.destroy_process_group()


def _spawn(out: Path, resume: bool = False, stop: str = "") -> None:
    init = out / f"init-{len(list(out.iterdir()))}"
    mp.spawn(_worker, args=(2, str(init), str(out), resume, stop), nprocs=2, join=True)


def _single(out: Path) -> dict:
    from embedlab.vision.finetune import Job, train

    model = _model()
    h = train(
        model, model.head, synthetic(60, 0), synthetic(30, 1), Job(cfg(), INPUTS, torch.device("cpu"), out / "ck1.pt")
    )
    return {"loss": h.step_loss, "val": [e.get("val_accuracy") for e in h.epochs], "w": model.state_dict()}


def _assert_same(two: dict, one: dict) -> None:
    assert len(two["loss"]) == len(one["loss"]) == 9  # 3 epochs x (60 // 20) steps of the same global batch
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    assert two["val"] == one["val"]
    for a, b in zip(two["w"].values(), one["w"].values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_two_gloo_processes_give_the_single_process_loss_history(tmp_path):
    _spawn(tmp_path)
    _assert_same(torch.load(tmp_path / "h.pt"), _single(tmp_path))
    assert (tmp_path / "ck.pt").is_file() and not list(tmp_path.glob("*.tmp"))  # rank 0 wrote the one checkpoint


@pytest.mark.parametrize("stop", ["interrupt", "dead rank"])
def test_a_stopped_two_process_run_resumes_exactly(tmp_path, stop):
    if stop == "interrupt":
        _spawn(tmp_path, stop=stop)
        assert "last complete checkpoint (after epoch 1)" in (tmp_path / "interrupted0.txt").read_text()
    else:
        with pytest.raises(mp.ProcessExitedException, match="exit code 3"):  # the launcher stops the job
            _spawn(tmp_path, stop=stop)
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert saved["epoch"] == 1  # the last complete epoch
    _spawn(tmp_path, resume=True)
    _assert_same(torch.load(tmp_path / "h.pt"), _single(tmp_path))


def test_batch_not_divisible_by_the_processes_is_refused():
    from embedlab.vision.recipe import check_shards

    with pytest.raises(ValueError, match="--batch-size divisible by the number of processes"):
        check_shards(cfg(batch_size=20), 60, 30, 3)
    with pytest.raises(ValueError, match="cannot share"):
        check_shards(cfg(batch_size=20), 60, 3, 4)  # more processes than validation images
    check_shards(cfg(batch_size=20), 60, 30, 4)


def test_a_checkpoint_of_another_network_or_resolution_is_refused(tmp_path):
    from embedlab.vision.finetune import CheckpointMismatch, Inputs, Job, train

    model = _model()
    train(
        model,
        model.head,
        synthetic(40, 0),
        synthetic(20, 1),
        Job(cfg(epochs=1), INPUTS, torch.device("cpu"), tmp_path / "ck.pt"),
    )
    other_size = Inputs(24, INPUTS.mean, INPUTS.std)
    # another resolution; another network (with BatchNorm)
    for net, inputs in ((_model(), other_size), (Tiny(), INPUTS)):
        with pytest.raises(CheckpointMismatch, match="another network, resolution or freeze"):
            train(
                net,
                net.head,
                synthetic(40, 0),
                synthetic(20, 1),
                Job(cfg(epochs=2), inputs, torch.device("cpu"), tmp_path / "ck.pt", resume=True),
            )
