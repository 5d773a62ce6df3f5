"""FixRes's batch-norm recalibration against its definition: the trained layers' running statistics become the average
over the batches of their inputs' mean and (unbiased) variance at the test resolution; frozen layers and every weight
are untouched."""

from __future__ import annotations

import torch
from torch import nn

from embedlab.vision.features import Inputs, preprocess
from embedlab.vision.fixres import recalibrate_batch_norm


def test_trained_batch_norm_statistics_are_recomputed_at_the_test_resolution():
    torch.manual_seed(0)
    frozen = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    trained = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU())
    model = nn.Sequential(frozen, trained, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    frozen[1].running_mean.uniform_(-1, 1)
    model.eval()
    trained.train()  # as set_train_mode leaves a partly frozen network
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randint(0, 256, (21, 3, 16, 16), dtype=torch.uint8)
    inputs = Inputs(24, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))

    assert recalibrate_batch_norm(model, images, inputs, batch=8, device=torch.device("cpu")) == 1

    with torch.no_grad():  # brute force: each batch's statistics of the trained batch norm's inputs, averaged
        x = preprocess(images, 24, torch.tensor(inputs.mean), torch.tensor(inputs.std))
        pre = trained[0](frozen(x)).transpose(0, 1)  # channels x images x pixels
        batches = [pre[:, i : i + 8].flatten(1) for i in range(0, 21, 8)]  # 8, 8 and 5 images
    bn = trained[1]
    assert torch.allclose(bn.running_mean, torch.stack([b.mean(1) for b in batches]).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack([b.var(1) for b in batches]).mean(0), atol=1e-6)
    assert bn.momentum == 0.1 and bn.training  # left as it was
    after = model.state_dict()
    for k, v in before.items():
        if not k.startswith("1.1.running") and not k.endswith("num_batches_tracked"):
            assert torch.equal(after[k], v), k  # weights, and the frozen layer's statistics, untouched


def test_a_fully_frozen_network_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    assert recalibrate_batch_norm(model, images, Inputs(8, (0, 0, 0), (1, 1, 1)), 2, torch.device("cpu")) == 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
