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

from embedlab.errors import InputError


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


def _lbfgs(z: torch.Tensor, labels: torch.Tensor, l2: float, max_iter: int, linear: nn.Linear) -> list[float]:
    """Fit ``linear`` in place on already standardised features ``z`` (no (N, D) temporaries per step)."""
    opt = torch.optim.LBFGS(
        linear.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-5,
        tolerance_change=1e-6,
        line_search_fn="strong_wolfe",
    )
    losses: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(z), labels) + 0.5 * l2 * linear.weight.pow(2).sum()
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    opt.step(closure)
    return losses


def fit_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    l2: float,
    max_iter: int = 300,
    n_classes: int = 10,
    init: LogisticRegression | None = None,
) -> ProbeFit:
    """Full-batch L-BFGS (strong Wolfe line search) on mean cross-entropy + (l2/2)·||W||².

    ``init`` warm-starts from another fit's weights (used along the L2 path, strongest first).

    >>> probe = embedlab.fit_probe(feats, data.train_y[:1000], l2=0.01)  # doctest: +SKIP
    >>> probe.model  # the fitted LogisticRegression (an nn.Module); probe.losses is its training curve
    """
    if l2 < 0:
        raise InputError(f"l2 must be >= 0, got {l2}")
    model = LogisticRegression(features.shape[1], n_classes)
    model.set_standardisation(features)
    if init is not None:
        model.linear.load_state_dict(init.linear.state_dict())
    with torch.no_grad():
        z = (features - model.mu) / model.sigma
    losses = _lbfgs(z, labels, l2, max_iter, model.linear)
    return ProbeFit(model=model.eval(), l2=l2, losses=losses)


def folded_linear(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A saved probe as one linear map of raw features: W (x - mu) / sigma + b = (W / sigma) x + (b - (W / sigma) mu).

    The weight and bias a fine-tuned network's new classifier starts from in LP-FT (Kumar et al., 2022).
    """
    w = state["linear.weight"] / state["sigma"]
    return w, state["linear.bias"] - w @ state["mu"]


@torch.no_grad()
def predict_proba(model: nn.Module, features: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """Class probabilities (N, C).

    >>> probs = embedlab.predict_proba(probe.model, test_feats)  # doctest: +SKIP
    """
    return torch.cat([model(features[i : i + batch]).softmax(1) for i in range(0, len(features), batch)])


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows whose most probable class is the label.

    >>> embedlab.accuracy(probs, data.test_y[:1000])  # doctest: +SKIP
    0.81
    """
    return float((probs.argmax(1) == labels).float().mean())


def choose_l2(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    val_f: torch.Tensor,
    val_y: torch.Tensor,
    grid: Sequence[float],
    max_iter: int = 300,
) -> tuple[float, list[dict[str, float]], LogisticRegression]:
    """The L2 strength with the best validation accuracy (ties: the stronger regularisation).

    The grid is walked from the strongest to the weakest L2, each fit warm-started from the previous
    one (a regularisation path: neighbouring solutions are close, so later fits need few steps).
    Returns the chosen strength, one row per grid value (ascending) and the chosen model.
    """
    rows, models = [], {}
    prev: LogisticRegression | None = None
    for l2 in sorted(set(grid), reverse=True):
        fit = fit_probe(train_f, train_y, l2, max_iter, init=prev)
        prev = models[l2] = fit.model
        rows.append(
            {
                "l2": l2,
                "train_acc": accuracy(predict_proba(fit.model, train_f), train_y),
                "val_acc": accuracy(predict_proba(fit.model, val_f), val_y),
                "iterations": len(fit.losses),
            }
        )
    rows.sort(key=lambda r: r["l2"])
    best = max(rows, key=lambda r: (round(r["val_acc"], 6), r["l2"]))
    return float(best["l2"]), rows, models[best["l2"]]
