"""Where the CPU time of the two vision hot loops goes: the fine-tuning step and frozen feature extraction, each in
fp32 and under bf16 autocast, profiled with torch.profiler in this process (taking turns) and grouped by kind of op.

The recipe's own shapes by default: EfficientNet-Lite1 with its CPU freeze (3 stages), channels_last, training batch 64
at 112 px with AdamW; extraction batch 16 at 128 px. The table shows ms per batch of each kind of op (self time, so
nothing is counted twice) and the bf16 / fp32 ratio of the whole step; `cpu capability` says which kernels ran.
Usage: python bench/vision_profile.py [--backbone efficientnet_lite1] [--steps 4] [--rows 12]
(run with nothing else busy on the machine)
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from embedlab.vision.backbones import create_backbone

#: Op name -> kind, first match wins: what the table groups by.
KINDS = (
    ("convolution backward", ("convolution_backward", "mkldnn_convolution_backward", "ConvolutionBackward")),
    ("convolution", ("conv2d", "convolution", "mkldnn_convolution", "_convolution", "thnn_conv")),
    ("batch norm", ("batch_norm", "native_batch_norm", "_batch_norm")),
    ("dtype conversion", ("aten::to", "aten::_to_copy", "aten::copy_")),
    (
        "optimizer",
        ("Optimizer.step", "_foreach", "adamw", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt"),
    ),
    ("activation", ("relu", "hardtanh", "clamp", "threshold")),
    ("linear / matmul", ("addmm", "mm", "linear", "matmul")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, needles in KINDS:
        if any(n.lower() in low for n in needles):
            return kind
    return "other"


def profiled(step, steps: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """(wall ms per step, self-CPU ms per step by kind, by op name) of ``steps`` calls after one warm-up call."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) * 1000 / steps
    by_kind: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1000 / steps
        by_kind[kind_of(e.key)] += ms
        by_op[e.key] += ms
    return wall, dict(by_kind), dict(by_op)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite1")
    ap.add_argument("--freeze-stages", type=int, default=None, help="default: the backbone's CPU freeze")
    ap.add_argument("--train-size", type=int, default=112)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--extract-size", type=int, default=128)
    ap.add_argument("--extract-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rows", type=int, default=10, help="ops listed under the table, by self time in fp32 training")
    args = ap.parse_args()

    bb = create_backbone(args.backbone, "none")
    freeze = bb.spec.cpu_freeze_stages if args.freeze_stages is None else args.freeze_stages
    model, _, trained = bb.with_new_head(10, "all", freeze)
    model = model.to(memory_format=torch.channels_last)
    model.eval()
    for name in trained or ():
        model.get_submodule(name).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=5e-4)
    x = torch.randn(args.train_batch, 3, args.train_size, args.train_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.train_batch,))
    xe = torch.randn(args.extract_batch, 3, args.extract_size, args.extract_size).contiguous(
        memory_format=torch.channels_last
    )
    features = create_backbone(args.backbone, "none").feature_extractor().eval().to(memory_format=torch.channels_last)

    def autocast(bf16: bool):
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def train_step(bf16: bool):
        def step() -> None:
            with autocast(bf16):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    def extract_step(bf16: bool):
        def step() -> None:
            with torch.inference_mode(), autocast(bf16):
                features(xe)

        return step

    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, cpu capability"
        f" {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; {args.backbone}, {freeze}"
        " frozen stages"
    )
    results = {}
    for name, make in (("train", train_step), ("extract", extract_step)):
        for bf16 in (False, True):  # taking turns: fp32 then bf16 of the same loop, one after the other
            results[(name, bf16)] = profiled(make(bf16), args.steps)
    for name, batch in (("train", args.train_batch), ("extract", args.extract_batch)):
        fp32, bf16 = results[(name, False)], results[(name, True)]
        kinds = sorted(set(fp32[1]) | set(bf16[1]), key=lambda k: -fp32[1].get(k, 0.0))
        print(f"\n{name}: ms per batch of {batch} (self CPU time by kind of op)")
        print("| kind | fp32 ms | share | bf16 ms | bf16 / fp32 |\n|---|---|---|---|---|")
        total32 = sum(fp32[1].values())
        for k in kinds:
            a, b = fp32[1].get(k, 0.0), bf16[1].get(k, 0.0)
            print(f"| {k} | {a:.1f} | {100 * a / total32:.0f} % | {b:.1f} | {b / a if a else float('inf'):.2f} |")
        print(f"| **wall time of the step** | {fp32[0]:.1f} | | {bf16[0]:.1f} | **{bf16[0] / fp32[0]:.2f}** |")
        print(f"images/s: fp32 {1000 * batch / fp32[0]:.0f}, bf16 {1000 * batch / bf16[0]:.0f}")
        for label, (own, other) in (("fp32", (fp32, bf16)), ("bf16", (bf16, fp32))):
            top = sorted(own[2].items(), key=lambda kv: -kv[1])[: args.rows]
            print(f"top ops in {label}: " + "; ".join(f"{op} {ms:.1f} ms" for op, ms in top))


if __name__ == "__main__":
    main()
