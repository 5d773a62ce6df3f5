"""Claim under test: OpenVINO's throughput mode (several streams fed by an asynchronous request queue) or a larger
batch runs the evaluation passes faster than the latency mode embedlab compiles for (one stream, batch 16).

The same converted network (EfficientNet-Lite1's classifier at 112 px, as validation and test run it; ``--features``:
the probe's extractor at 128 px) compiled both ways, fed the same preprocessed batches, in one process taking turns.
Printed per mode: images/s (median of the rounds), the ratio to the latency mode at batch 16, and the largest output
difference.
Usage: python bench/vision_openvino_modes.py [--weights imagenet] [--features] [--size 112] [--images 256]
[--rounds 3]   (run with nothing else busy on the machine)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from _vision import median, vision_args

from embedlab.vision.backbones import create_backbone
from embedlab.vision.features import preprocess


def main() -> None:
    import openvino as ov

    ap = vision_args(__doc__, size=112, batch=16, count="images", count_default=256)
    ap.set_defaults(backbone="efficientnet_lite1")
    ap.add_argument("--features", action="store_true")
    args = ap.parse_args()
    bb = create_backbone(args.backbone, args.weights)
    model = (bb.feature_extractor() if args.features else bb.with_new_head(10)[0]).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    x = preprocess(images, args.size, torch.tensor(bb.spec.mean), torch.tensor(bb.spec.std)).contiguous().numpy()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(model, example_input=torch.zeros(2, 3, args.size, args.size))
    core, threads = ov.Core(), torch.get_num_threads()
    base = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    latency = core.compile_model(converted, "CPU", base)
    throughput = core.compile_model(converted, "CPU", base | {"PERFORMANCE_HINT": "THROUGHPUT"})
    requests = throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")

    def synchronous(batch: int) -> Callable[[], tuple[float, np.ndarray]]:
        def run() -> tuple[float, np.ndarray]:
            t0 = time.perf_counter()
            out = [latency(x[i : i + batch])[0].copy() for i in range(0, len(x), batch)]
            return len(x) / (time.perf_counter() - t0), np.concatenate(out)

        return run

    def queued(batch: int) -> Callable[[], tuple[float, np.ndarray]]:
        def run() -> tuple[float, np.ndarray]:
            queue, done = ov.AsyncInferQueue(throughput, requests), {}
            queue.set_callback(lambda request, i: done.__setitem__(i, request.get_output_tensor(0).data.copy()))
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                queue.start_async({0: x[i : i + batch]}, i)
            queue.wait_all()
            return len(x) / (time.perf_counter() - t0), np.concatenate([done[k] for k in sorted(done)])

        return run

    b = args.batch
    modes = {
        f"latency, batch {b} (embedlab)": synchronous(b),
        f"latency, batch {2 * b}": synchronous(2 * b),
        f"throughput ({requests} requests), batch {b // 2}": queued(b // 2),
        f"throughput ({requests} requests), batch {b}": queued(b),
        f"throughput ({requests} requests), batch {2 * b}": queued(2 * b),
    }
    outputs = {name: run()[1] for name, run in modes.items()}  # warm-up, and the outputs compared
    speeds: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, run in modes.items():
            speeds[name].append(run()[0])
    ref = next(iter(outputs.values()))
    first = median(next(iter(speeds.values())))
    what = "features at" if args.features else "classifier at"
    print(f"{args.backbone} {what} {args.size} px, {threads} threads, {throughput.get_property('NUM_STREAMS')} streams")
    for name, values in speeds.items():
        diff = float(np.abs(outputs[name] - ref).max() / np.abs(ref).max())
        print(
            f"  {name:<34} {median(values):7.1f} img/s, ratio {median(values) / first:.3f} "
            f"(rounds {', '.join(f'{v:.1f}' for v in values)}); largest difference {diff:.1e}"
        )


if __name__ == "__main__":
    main()
