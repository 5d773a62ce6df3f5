"""GPU throughput at 224 px with bf16 autocast and channels_last: frozen extraction and a training step.

Measures, in one process, for each backbone:
  - extraction through embedlab's own path (uint8 32 px on the GPU -> resize -> normalise -> forward),
    against the bare forward on ready 224 px tensors (ratio: is the data path a bottleneck?);
  - a full training step (forward + backward + SGD Nesterov step, bf16 autocast) on ready tensors,
    and the projected time of one 45 000-image epoch.
Random weights and images: speed does not depend on them. Needs CUDA; run with nothing else on the GPU.
Usage: python bench/gpu_throughput.py [--batch 256] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn import functional as F

from embedlab.vision.backbones import create_backbone
from embedlab.vision.features import Inputs, extract


def timed(fn, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--backbones", default="resnet18,efficientnet_lite0")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "size": args.size,
        "batch": args.batch,
    }
    for name in args.backbones.split(","):
        bb = create_backbone(name, "none")
        spec = bb.spec
        n = args.batch * args.steps
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=dev)
        model = bb.feature_extractor().to(dev).to(memory_format=torch.channels_last).eval()
        ready = torch.randn(args.batch, 3, args.size, args.size, device=dev).contiguous(
            memory_format=torch.channels_last
        )

        def bare_fwd() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(ready)

        timed(bare_fwd, 5)
        bare = n / timed(bare_fwd, args.steps)
        extract(model, images[: args.batch * 3], Inputs(args.size, spec.mean, spec.std), args.batch, dev)  # warm-up
        torch.cuda.synchronize()
        _, stats = extract(model, images, Inputs(args.size, spec.mean, spec.std), args.batch, dev)
        # training step: a fresh full model with a 10-way head
        net = create_backbone(name, "none").model
        setattr(net, spec.head, torch.nn.Linear(spec.feature_dim, 10))
        net = net.to(dev).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        labels = torch.randint(0, 10, (args.batch,), device=dev)

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(ready), labels, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        timed(step, 5)
        train = n / timed(step, args.steps)
        results[name] = {
            "extract_bare_forward_img_s": round(bare, 1),
            "extract_pipeline_img_s": round(stats.images_per_second, 1),
            "extract_ratio": round(stats.images_per_second / bare, 3),
            "train_step_img_s": round(train, 1),
            "epoch_45000_seconds": round(45000 / train, 1),
            "trainable_parameters": sum(p.numel() for p in net.parameters()),
        }
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
