"""The linear probe: multinomial logistic regression as an ``nn.Module`` around ``nn.Linear``.

Features are standardised with training statistics (a buffer of the module, so the model is
self-contained), then fitted with full-batch L-BFGS on cross-entropy + (l2 / 2)·||W||². The
problem is convex and small (N x D x 10), so a deterministic second-order method converges in a
few hundred cheap steps with no learning rate or epoch count to tune; only the L2 strength is
chosen, on the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


class LogisticRegression(nn.Module):
    """softmax(W · (x - mu) / sigma + b): ``nn.Linear(feature_dim, n_classes)`` on standardised features."""

    def __init__(self, feature_dim: int, n_classes: int = 10):
        super().__init__()
        self.register_buffer("mu", torch.zeros(feature_dim))
        self.register_buffer("sigma", torch.ones(feature_dim))
        self.linear = nn.Linear(feature_dim, n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def set_standardisation(self, features: torch.Tensor) -> None:
        self.mu.copy_(features.mean(0))
        self.sigma.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mu) / self.sigma)


@dataclass
class ProbeFit:
    model: LogisticRegression
    l2: float
    losses: list[float] = field(default_factory=list)


def fit_probe(features: torch.Tensor, labels: torch.Tensor, l2: float, max_iter: int = 300, n_classes: int = 10) -> ProbeFit:
    """Full-batch L-BFGS (strong Wolfe line search) on mean cross-entropy + (l2/2)·||W||²."""
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    model = LogisticRegression(features.shape[1], n_classes)
    model.set_standardisation(features)
    opt = torch.optim.LBFGS(model.linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")
    losses: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(features), labels) + 0.5 * l2 * model.linear.weight.pow(2).sum()
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    opt.step(closure)
    return ProbeFit(model=model.eval(), l2=l2, losses=losses)


@torch.no_grad()
def predict_proba(model: nn.Module, features: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """Class probabilities (N, C)."""
    return torch.cat([model(features[i : i + batch]).softmax(1) for i in range(0, len(features), batch)])


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels).float().mean())


def choose_l2(
    train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor, val_y: torch.Tensor,
    grid: Sequence[float], max_iter: int = 300,
) -> tuple[float, list[dict[str, float]]]:
    """The L2 strength with the best validation accuracy (ties: the stronger regularisation)."""
    rows = []
    for l2 in grid:
        fit = fit_probe(train_f, train_y, l2, max_iter)
        rows.append({"l2": l2, "train_acc": accuracy(predict_proba(fit.model, train_f), train_y),
                     "val_acc": accuracy(predict_proba(fit.model, val_f), val_y), "iterations": len(fit.losses)})
    best = max(rows, key=lambda r: (round(r["val_acc"], 6), r["l2"]))
    return float(best["l2"]), rows
