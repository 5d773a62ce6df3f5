"""Question: what does a stronger offline backbone cost per image on this CPU, and how much of it
does freezing the early stages (``--freeze-stages K``) win back?

Every candidate (``backbone:K``) trains on the same ready batch, as the fine-tuning loop does: channels_last,
AdamW, frozen stages in eval mode, so no backward pass through them. Candidates take turns, round after round,
in this process, so machine noise hits all alike. Also times the probe's forward pass (eval mode, no grad) at
``--probe-size``. Prints images/s and the ratio to the first candidate.
Usage: python bench/vision_backbones.py [--size 112] [--batch 64] [--steps 3] [--rounds 3]
       [--candidates efficientnet_lite0:0,efficientnet_lite1:3,efficientnet_lite2:4] [--probe-size 128]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _vision import median, vision_args

from embedlab.vision.backbones import create_backbone
from embedlab.vision.recipe import set_train_mode


def train_rate(name: str, k: int, size: int, batch: int, steps: int) -> Callable[[], float]:
    model, _, trained = create_backbone(name, "none").with_new_head(10, "all", freeze_stages=k)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def measure() -> float:
        set_train_mode(model, trained)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * batch / (time.perf_counter() - t0)

    return measure


def forward_rate(name: str, size: int, batch: int, steps: int) -> Callable[[], float]:
    model = create_backbone(name, "none").feature_extractor().to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

    def measure() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(steps):
                model(x)
        return steps * batch / (time.perf_counter() - t0)

    return measure


def take_turns(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    for m in measures.values():  # warm-up, untimed
        m()
    out: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(rounds):
        for k, m in measures.items():
            out[k].append(m())
    return out


def report(title: str, rates: dict[str, list[float]]) -> None:
    base = median(next(iter(rates.values())))
    print(title)
    for k, v in rates.items():
        print(
            f"  {k:24s} {median(v):6.1f} img/s (rounds {', '.join(f'{r:.1f}' for r in v)})  ratio"
            f" {median(v) / base:.3f}"
        )


def main() -> None:
    ap = vision_args(__doc__, size=112, batch=64, count="steps", count_default=3)
    ap.add_argument("--candidates", default="efficientnet_lite0:0,efficientnet_lite1:3,efficientnet_lite2:4")
    ap.add_argument("--probe-size", type=int, default=128)
    args = ap.parse_args()
    cands = [(c.split(":")[0], int(c.split(":")[1])) for c in args.candidates.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}")
    train = take_turns(
        {f"{n} freeze {k}": train_rate(n, k, args.size, args.batch, args.steps) for n, k in cands}, args.rounds
    )
    report(
        f"training step (forward, backward, AdamW) at {args.size} px; ratio = images/s over the first candidate's",
        train,
    )
    names = list(dict.fromkeys(n for n, _ in cands))
    fwd = take_turns({n: forward_rate(n, args.probe_size, 2 * args.batch, args.steps) for n in names}, args.rounds)
    report(f"probe feature extraction (forward only) at {args.probe_size} px", fwd)


if __name__ == "__main__":
    main()
