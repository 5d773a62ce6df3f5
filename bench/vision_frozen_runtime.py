"""Claim under test: running the frozen stem and first stages through the inference runtime in training (their forward
pass has no gradient: it is inference) makes the fine-tuning loop faster than running them in torch.

The product's loop (``finetune.train``) on the ``cpu`` recipe's network (EfficientNet-Lite1 with its stem and first two
stages frozen, batch 64 at 112 px, AdamW), once as it is and once with the frozen stages' modules patched so that the
first runs all of them through the runtime ``--runtime auto`` picks and the others pass their input on, taking turns in
this process, each on its own copy of the network; only the optimiser steps are timed (from the second on). Also
printed: both copies' first-step losses. (Measured not to pay, so the product does not do it: docs/performance.md.)
Usage: python bench/vision_frozen_runtime.py [--weights imagenet] [--steps 8] [--rounds 3]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from _vision import alternate, median, vision_args

from embedlab.allocator import keep_freed_memory
from embedlab.config import FinetuneConfig
from embedlab.vision import runtime
from embedlab.vision.backbones import create_backbone
from embedlab.vision.finetune import Inputs, Job, train
from embedlab.vision.recipe import set_train_mode


@contextmanager
def frozen_stages_in_runtime(model: torch.nn.Module, names: tuple[str, ...], size: int, name: str) -> Iterator[None]:
    """The frozen modules ``names`` (a chain the model runs in that order) computed by the first through runtime
    ``name``; the others pass their input on."""
    modules = [model.get_submodule(n) for n in names]
    run = runtime.engine(name, torch.nn.Sequential(*modules), size, "cpu")
    first = types.MethodType(lambda self, x: run(x).contiguous(memory_format=torch.channels_last), modules[0])
    modules[0].forward = first
    for m in modules[1:]:
        m.forward = types.MethodType(lambda self, x: x, m)
    try:
        yield
    finally:
        for m in modules:
            del m.forward


def main() -> None:
    ap = vision_args(__doc__, size=112, batch=64, count="steps", count_default=8)
    ap.set_defaults(backbone="efficientnet_lite1")
    ap.add_argument("--freeze-stages", type=int, default=3)
    args = ap.parse_args()
    keep_freed_memory()  # as the command line does
    bb = create_backbone(args.backbone, args.weights)
    model, _, trained = bb.with_new_head(10, "all", args.freeze_stages)
    frozen = tuple(name for stage in bb.spec.stages[: args.freeze_stages] for name in stage)
    n = args.batch * (args.steps + 1)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    inputs = Inputs(args.size, bb.spec.mean, bb.spec.std)
    tmp = Path(tempfile.mkdtemp())
    losses: dict[str, float] = {}

    chosen = runtime.choose("auto", "cpu")
    # validation (untimed) runs in torch, through the patched modules
    cfg = FinetuneConfig(batch_size=args.batch, epochs=1, eval_batch_size=args.batch, runtime="torch", tta_shifts=0)

    def loop(name: str) -> float:
        net = copy.deepcopy(model)
        set_train_mode(net, trained)
        stamps: list[float] = []
        with frozen_stages_in_runtime(net, frozen, args.size, chosen) if name == "auto" else contextlib.nullcontext():
            history = train(
                net,
                net.get_submodule(bb.spec.head),
                (images, labels),
                (images[: args.batch], labels[: args.batch]),
                Job(cfg, inputs, torch.device("cpu"), tmp / f"{name}.pt"),
                trained,
                lambda e, s: stamps.append(time.perf_counter()),
            )
        losses[name] = history.step_loss[0]
        return (len(stamps) - 1) * args.batch / (stamps[-1] - stamps[0])

    base, fast = alternate(lambda: loop("torch"), lambda: loop("auto"), args.rounds)
    print(
        f"{args.backbone}, {args.freeze_stages} frozen stages, batch {args.batch} at {args.size} px, "
        f"{torch.get_num_threads()} threads, cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    for label, speeds in (("torch runs the frozen stages", base), (f"{chosen} runs them", fast)):
        print(f"  {label:<30} {median(speeds):6.1f} img/s  (rounds {', '.join(f'{x:.1f}' for x in speeds)})")
    print(f"  ratio {median(fast) / median(base):.3f}; first-step loss {losses['torch']:.6f} vs {losses['auto']:.6f}")


if __name__ == "__main__":
    main()
