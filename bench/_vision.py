"""Shared set-up for the vision benchmarks: the common flags and the paired, alternating measurement."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def vision_args(doc: str | None, size: int, batch: int, count: str, count_default: int) -> argparse.ArgumentParser:
    """--backbone, --weights, --size, --batch, --rounds and the benchmark's own repeat count (``count``)."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="none", help="weights do not change the speed; 'none' needs no files")
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument(f"--{count}", type=int, default=count_default)
    ap.add_argument("--rounds", type=int, default=3)
    return ap


def alternate(first: Callable[[], float], second: Callable[[], float], rounds: int) -> tuple[list[float], list[float]]:
    """Each measurement once untimed (warm-up), then ``rounds`` of both in turn: machine noise hits both alike."""
    first(), second()
    a, b = [], []
    for _ in range(rounds):
        a.append(first())
        b.append(second())
    return a, b


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
