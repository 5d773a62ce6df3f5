"""The tiny network, data and recipe the fine-tuning tests share (a helper module, not a test module)."""

from __future__ import annotations

import torch
from torch import nn

from embedlab.config import FinetuneConfig
from embedlab.vision.finetune import Inputs

CPU = torch.device("cpu")
INPUTS = Inputs(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class Tiny(nn.Module):
    """Conv + BatchNorm + a linear head: enough to exercise parameter groups and train/eval modes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-coloured 32 px uint8 images: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = (
        (y.view(-1, 1, 1, 1) * 24 + 10 + torch.randint(-10, 10, (n, 3, 32, 32), generator=g))
        .clamp(0, 255)
        .to(torch.uint8)
    )
    return x, y


def cfg(**kw) -> FinetuneConfig:
    return FinetuneConfig(
        **{
            "optimizer": "sgd",
            "epochs": 3,
            "batch_size": 20,
            "lr": 0.05,
            "warmup_fraction": 0.2,
            "eval_batch_size": 50,
            **kw,
        }
    )
