"""Claim under test: computing the weight gradient of the small depthwise convolutions as one grouped convolution
(``embedlab.vision.depthwise``) makes the fine-tuning step faster on a CPU, with the same gradients.

Two measurements, each taking turns in this process: (1) every trained depthwise convolution's weight gradient, by
torch (oneDNN) and by the grouped convolution, on the layer's real input shape, with their largest difference;
(2) the product's training step (``finetune.train_step``: the `cpu` recipe's network, freeze, channels_last, AdamW)
on one fixed batch, without and with ``faster_weight_grads``. Printed: milliseconds and the ratios.
Usage: python bench/vision_depthwise.py [--backbone efficientnet_lite1] [--size 112] [--batch 64] [--steps 4]
[--rounds 3]   (run with nothing else busy on the machine)
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from _vision import alternate, median, vision_args


def layer_shapes(model, x):
    """(name, input) of every depthwise convolution of ``model`` with a trained weight, from one forward pass."""
    import torch

    seen = []
    hooks = [
        m.register_forward_hook(lambda m, args, out, name=name: seen.append((name, m, args[0].detach())))
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.weight.requires_grad
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def per_layer(model, x, rounds: int) -> None:
    import torch

    from embedlab.vision.depthwise import depthwise_weight_grad, eligible

    print("layer | input | kernel, stride | torch ms | grouped conv ms | ratio | largest difference")
    for name, conv, inp in layer_shapes(model, x):
        w, s, p, k = conv.weight.detach(), conv.stride, list(conv.padding), conv.kernel_size[0]
        if type(conv) is not torch.nn.Conv2d or s != (1, 1):  # "same" padding done apart, or strided: not covered
            print(f"{name} | {tuple(inp.shape)} | {k}x{k}, {s[0]} | (not covered)")
            continue
        grad = torch.randn_like(torch.nn.functional.conv2d(inp, w, None, s, p, 1, conv.groups))

        def oned(inp=inp, grad=grad, w=w, s=s, p=p):
            mask = [False, True, False]
            t0 = time.perf_counter()
            out = torch.ops.aten.convolution_backward(grad, inp, w, None, s, p, [1, 1], False, [0, 0], w.shape[0], mask)
            oned.out = out[1]
            return time.perf_counter() - t0

        def grouped(inp=inp, grad=grad, k=k, p=p):
            t0 = time.perf_counter()
            grouped.out = depthwise_weight_grad(inp, grad, k, p[0])
            return time.perf_counter() - t0

        a, b = alternate(oned, grouped, rounds)
        diff = float((oned.out - grouped.out).abs().max() / oned.out.abs().max())
        used = "used" if eligible(conv) and inp.shape[-1] <= 7 else "not used"
        print(
            f"{name} | {tuple(inp.shape)} | {k}x{k}, 1 | {median(a) * 1e3:.1f} | {median(b) * 1e3:.1f} | "
            f"{median(a) / median(b):.2f} ({used}) | {diff:.1e}"
        )


def main() -> None:
    ap = vision_args(__doc__, size=112, batch=64, count="steps", count_default=4)
    ap.set_defaults(backbone="efficientnet_lite1")
    args = ap.parse_args()
    import torch

    from embedlab.allocator import keep_freed_memory
    from embedlab.config import FinetuneConfig
    from embedlab.vision.backbones import create_backbone
    from embedlab.vision.depthwise import faster_weight_grads
    from embedlab.vision.features import Inputs
    from embedlab.vision.finetune import Job, start_loop, train_step
    from embedlab.vision.recipe import set_train_mode

    keep_freed_memory()
    torch.manual_seed(0)
    bb = create_backbone(args.backbone, args.weights)
    model, head, trained = bb.with_new_head(10, "all", bb.spec.cpu_freeze_stages)
    cfg = FinetuneConfig(batch_size=args.batch, epochs=1)
    cpu = torch.device("cpu")
    job = Job(cfg, Inputs(args.size, bb.spec.mean, bb.spec.std), cpu, Path(tempfile.mkdtemp()) / "c.pt")
    loop = start_loop(model, head, args.batch * 1000, job)
    set_train_mode(model, trained)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    per_layer(model, x, args.rounds)

    def steps(faster: bool) -> float:
        with faster_weight_grads(model, cpu) if faster else contextlib.nullcontext():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(loop, x, y, cfg)
            return (time.perf_counter() - t0) / args.steps

    a, b = alternate(lambda: steps(False), lambda: steps(True), args.rounds)
    print(
        f"training step ({args.backbone}, batch {args.batch} at {args.size} px): torch {median(a) * 1e3:.0f} ms, "
        f"with the grouped weight gradient {median(b) * 1e3:.0f} ms, ratio {median(a) / median(b):.3f} "
        f"({args.batch / median(a):.1f} vs {args.batch / median(b):.1f} img/s)"
    )


if __name__ == "__main__":
    main()
