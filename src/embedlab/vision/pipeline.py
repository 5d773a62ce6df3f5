"""Part 1 end to end: the linear probe (A, B) and fine-tuning (C) with its comparison, each step's output handed to
the run's store as soon as the step finishes. The steps themselves live in ``steps`` (A, B) and ``steps_1c`` (C)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from embedlab.config import FinetuneConfig, ProbeConfig
from embedlab.distributed import current
from embedlab.results import Comparison, FinetuneResult, ProbeResult
from embedlab.store import Output, Store
from embedlab.vision.compare import comparison_table
from embedlab.vision.finetune import Job
from embedlab.vision.registry import BackboneChoice
from embedlab.vision.steps import probe_setup, step_1a_features, step_1a_fit, step_1b_gallery
from embedlab.vision.steps_1c import (
    finetune_setup,
    prepare_finetune,
    resolve_head_init,
    step_1c_result,
    step_1c_test,
    step_1c_train,
    step_compare,
)

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
    probe: ProbeResult | None = None,
) -> FinetuneResult:
    """Part 1 C into ``store``: the probe (unless given, done or disabled), fine-tuning, its evaluation and gallery, the
    comparison.

    ``probe`` is the run's probe when the caller ran it; otherwise a finished one is read from the run folder once,
    here, or rank 0 runs it first. With ``resume`` the loop continues from the run's last complete epoch checkpoint.
    Under torchrun every rank calls this: rank 0 alone runs the probe and keeps the checkpoint, which every rank
    resumes from; the other ranks' stores are scratch.
    """
    cfg.validate()
    dist = current()
    t_all = time.perf_counter()
    setup = finetune_setup(cfg, choice)
    store.settings("finetune", setup.settings(cfg))
    probe = probe or store.results().probe
    if cfg.probe and dist.is_main and probe is None:  # the probe fine-tuning is compared with, and LP-FT starts from
        probe = run_probe(cfg.probe_config(), store, setup.choice)
    lp_ft = resolve_head_init(cfg.head_init, probe) == "probe" and dist.is_main  # DDP gives the others rank 0's
    prepared = prepare_finetune(cfg, setup, probe, store.lp_ft_probe() if lp_ft else None)
    job = Job(cfg, prepared.inputs, setup.device, *_checkpoint(store, resume))
    trained = step_1c_train(prepared, job)
    store.write(trained.out)
    test = step_1c_test(prepared.model, job, prepared.data, prepared.test_idx, setup.backbone.spec.name)
    store.write(test.out)
    out = step_1c_result(cfg, setup, prepared, trained, test, probe, time.perf_counter() - t_all)
    store.write(out)
    (result,) = out.results
    if compare and probe is not None:  # the main job orders the comparison itself
        run_comparison(store, probe, result)
    return result


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
    out = step_compare(probe, finetune, store.predictions("probe"), store.predictions("finetune"))
    store.write(out)
    (comparison,) = out.results
    return comparison
