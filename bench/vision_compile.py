"""Question: does ``torch.compile`` make a fine-tuning step faster on this CPU, and does it stay
bit-for-bit repeatable (the condition for exact resume)?

The eager and the compiled network start from the same weights and train on the same ready batch
(112 px, channels_last: what the loop feeds them), alternating rounds in this process; the compile
time is reported apart. Repeatability: two compiled copies from the same state, the same batches,
must end with identical weights. Prints the compiled / eager images/s ratio.
Usage: python bench/vision_compile.py [--size 112] [--batch 64] [--steps 6] [--rounds 3]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from _vision import alternate, median, vision_args
from torch import nn

from embedlab.vision.backbones import create_backbone


def trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def rate(step, steps: int, batch: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def repeatable(base: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> bool:
    """Two compiled copies of one state, trained on the same batches, end bit-for-bit equal."""
    ends = []
    for _ in range(2):
        m = copy.deepcopy(base)
        step = trainer(torch.compile(m), x, y)
        for _ in range(steps):
            step()
        ends.append([p.detach().clone() for p in m.parameters()])
    return all(torch.equal(a, b) for a, b in zip(*ends))


def main() -> None:
    args = vision_args(__doc__, size=112, batch=64, count="steps", count_default=6).parse_args()
    model, _, _ = create_backbone(args.backbone, args.weights).with_new_head(10)
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    eager_model, compiled_model = copy.deepcopy(model), copy.deepcopy(model)
    eager, compiled = trainer(eager_model, x, y), trainer(torch.compile(compiled_model), x, y)
    t0 = time.perf_counter()
    compiled()  # the first call compiles forward and backward
    compile_s = time.perf_counter() - t0
    e, c = alternate(
        lambda: rate(eager, args.steps, args.batch), lambda: rate(compiled, args.steps, args.batch), args.rounds
    )
    em, cm = median(e), median(c)
    print(
        f"{args.backbone} at {args.size} px, batch {args.batch}, torch threads {torch.get_num_threads()}, torch"
        f" {torch.__version__}"
    )
    print(f"eager:    {em:.1f} img/s (rounds {', '.join(f'{v:.1f}' for v in e)})")
    print(
        f"compiled: {cm:.1f} img/s (rounds {', '.join(f'{v:.1f}' for v in c)}), first call (compilation)"
        f" {compile_s:.0f} s"
    )
    print(f"ratio compiled / eager = {cm / em:.3f}")
    print(f"compiled training bit-for-bit repeatable over 3 steps: {repeatable(model, x, y, 3)}")


if __name__ == "__main__":
    main()
