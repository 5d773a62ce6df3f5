"""Train at one resolution, test at another (Touvron et al., "Fixing the train-test resolution discrepancy", 2019):
before a pass at the test resolution, the batch-norm statistics of the trained layers are recomputed at it.

Random-resized crops make objects look larger in training than at test time; testing a little higher than training
matches their apparent size again, and the trained layers' running statistics, kept at the training resolution, are
what no longer fit. Recomputing them on a fixed set of training images at the test resolution, weights untouched,
costs one forward pass over those images. Frozen layers keep their ImageNet statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from embedlab.vision.features import Inputs, preprocess

#: Training images whose statistics are recomputed (the first of the training split, as they are: no augmentation).
RECALIBRATION_IMAGES = 2048


@torch.no_grad()
def recalibrate_batch_norm(
    model: nn.Module, images: torch.Tensor, inputs: Inputs, batch: int, device: torch.device
) -> int:
    """Recompute, at ``inputs.size``, the running mean and variance of every batch-norm layer of ``model`` that is in
    training mode (the trained ones), as the plain average over ``images`` (uint8), then leave the model as it was.
    Returns how many layers were recomputed."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
    mean, std = torch.tensor(inputs.mean, device=device), torch.tensor(inputs.std, device=device)
    for i in range(0, len(images), batch):
        model(preprocess(images[i : i + batch].to(device), inputs.size, mean, std))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return len(layers)
