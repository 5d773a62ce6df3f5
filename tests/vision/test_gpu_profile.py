"""Every decision the gpu profile takes that does not need CUDA, checked on the CPU, so that a GPU run
cannot fail on a typo: profile resolution, resolution, bf16 autocast selection, batch sizes (training and
inference), backend."""

from __future__ import annotations

import pytest
import torch

from embedlab.config import FinetuneConfig
from embedlab.profiles import PROFILES, profile_overrides, resolve_profile
from embedlab.study import plan, study_config
from embedlab.vision.features import CPU_INFERENCE_BATCH, EXTRACT_BATCH_GPU, inference_batch, numerics, uses_bf16
from embedlab.vision.recipe import EVAL_BATCH_GPU, check_shards
from embedlab.vision.registry import REGISTRY
from embedlab.vision.steps import resolve_size
from embedlab.vision.steps_1c import resolve_freeze_stages

CUDA = torch.device("cuda")  # a device object only: nothing here touches a GPU


def test_auto_resolves_to_the_gpu_recipe_when_cuda_is_present():
    assert resolve_profile("auto", cuda=True) == resolve_profile("default", cuda=True) == "gpu"
    assert resolve_profile("auto", cuda=False) == "cpu"
    assert profile_overrides("auto", "finetune", cuda=True) == PROFILES["gpu"]["finetune"]
    cfg = study_config("auto", True, {"backbone": "resnet18"})
    assert cfg.profile == "gpu"
    ft, cpu = cfg.finetune, study_config("auto", False, {"backbone": "resnet18"}).finetune
    # every override arrives
    assert PROFILES["gpu"]["finetune"] and all(getattr(ft, k) == v for k, v in PROFILES["gpu"]["finetune"].items())
    # and none of them without CUDA
    assert all(getattr(cpu, k) == getattr(FinetuneConfig(), k) for k in PROFILES["gpu"]["finetune"])
    # the shared flag reaches it; the main job runs its probe as its own step
    assert ft.backbone == "resnet18" and not ft.probe
    assert [row[0] for row in plan(cfg, set(), {})] == cfg.steps  # the plan prints for a profile without CPU minutes


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_resolution_on_a_gpu_is_the_backbones_native_size(name):
    cfg = study_config("gpu", True, {"backbone": name})
    native = REGISTRY[name].native_size
    probe = cfg.probe
    assert resolve_size(probe, native, CUDA) == (probe.size or native)
    assert resolve_size(cfg.finetune, native, CUDA) == 224
    assert resolve_size(study_config("cpu", False, {}).finetune, native, torch.device("cpu")) == 112


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_gpu_trains_every_stage_and_a_cpu_freezes_the_backbones_own_share(name):
    """What each rule resolves to, and what it does to the network: the frozen stages' parameters take no gradient,
    every later stage and the head do."""
    from embedlab.vision.backbones import create_backbone

    spec, cpu = REGISTRY[name], torch.device("cpu")
    assert resolve_freeze_stages(study_config("gpu", True, {"backbone": name}).finetune, spec, CUDA) == 0
    assert resolve_freeze_stages(FinetuneConfig(backbone=name, train_scope="last"), spec, cpu) == 0
    # an explicit count wins
    assert resolve_freeze_stages(FinetuneConfig(backbone=name, freeze_stages=1), spec, CUDA) == 1
    k = resolve_freeze_stages(study_config("cpu", False, {"backbone": name}).finetune, spec, cpu)
    assert 0 <= k < len(spec.stages)
    model, _, _ = create_backbone(name, "none", 0).with_new_head(10, "all", k)
    grads = {
        stage: {p.requires_grad for n in names for p in model.get_submodule(n).parameters()}
        for stage, names in enumerate(spec.stages)
    }
    assert all(grads[s] == ({False} if s < k else {True}) for s in grads if grads[s])
    assert all(p.requires_grad for p in model.get_submodule(spec.head).parameters())


def test_bf16_autocast_only_on_cuda_and_the_feature_cache_knows_it():
    assert uses_bf16(CUDA) and not uses_bf16(torch.device("cpu")) and not uses_bf16(torch.device("mps"))
    assert numerics(CUDA) != numerics(torch.device("cpu")) and "bf16" in numerics(CUDA)


def test_the_gpu_batch_splits_over_one_to_eight_gpus_and_not_over_three():
    cfg = study_config("gpu", True, {}).finetune
    for world in (1, 2, 4, 8):
        check_shards(cfg, 45_000, 5_000, world)
    with pytest.raises(ValueError, match="divisible"):
        check_shards(cfg, 45_000, 5_000, 3)


def test_inference_batches_are_large_on_a_gpu_and_cache_sized_on_a_cpu():
    cpu = torch.device("cpu")
    gpu_cfg, cpu_cfg = study_config("gpu", True, {}), study_config("cpu", False, {})
    assert inference_batch(gpu_cfg.probe.batch_size, CUDA, EXTRACT_BATCH_GPU) == 128
    assert inference_batch(gpu_cfg.finetune.eval_batch_size, CUDA, EVAL_BATCH_GPU) == 256
    assert (
        inference_batch(cpu_cfg.probe.batch_size, cpu, EXTRACT_BATCH_GPU)
        == inference_batch(cpu_cfg.finetune.eval_batch_size, cpu, EVAL_BATCH_GPU)
        == 16
    )
    # unset: by device
    assert inference_batch(None, cpu, 256) == CPU_INFERENCE_BATCH < inference_batch(None, CUDA, 256) == 256
    assert inference_batch(48, CUDA, 256) == inference_batch(48, cpu, 256) == 48  # a flag wins
