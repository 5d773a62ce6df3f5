"""The weight gradient of small depthwise convolutions on a CPU, computed as one grouped convolution.

oneDNN's backward-weights kernel for a depthwise 5x5 convolution on a small map is far slower than the forward pass
of the same convolution: on EfficientNet-Lite1's last stage at 112 px (64 x 1152 channels of 4 x 4) it takes 65-72 ms
against 2-3 ms forward, and those four layers alone were a fifth of a training step. The same gradient is a
convolution of each image's channel with its own output gradient as the kernel, summed over the images, which oneDNN's
forward kernel computes in 5 ms. ``bench/vision_depthwise.py`` measures each layer shape and the training step with
and without it; docs/performance.md holds the table that fixes ``MIN_KERNEL`` and ``MAX_SIDE``.

The gradient of the input and the forward pass are torch's own; only the weight gradient is computed another way, so
the training sees the same numbers up to the order of a sum (relative differences about 1e-6).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Only kernels this large or larger (3x3 kernels keep oneDNN's backward: it is fast there)...
MIN_KERNEL = 5
#: ...on maps this small or smaller: at 14 x 14 the grouped convolution is no faster.
MAX_SIDE = 7


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: int, padding: int) -> torch.Tensor:
    """dL/dw, shaped (C, 1, k, k), of ``F.conv2d(x, w, stride=1, padding=padding, groups=C)`` for a ``kernel`` x
    ``kernel`` depthwise weight ``w``, given ``grad_out`` = dL/d(output): for every (image, channel) pair the padded
    input plane is correlated with that pair's output gradient (one grouped convolution over N x C groups), and the
    images' results are summed."""
    n, c, h, w = x.shape
    planes = x.contiguous().view(1, n * c, h, w)
    kernels = grad_out.contiguous().view(n * c, 1, *grad_out.shape[2:])
    return F.conv2d(planes, kernels, padding=padding, groups=n * c).view(n, c, kernel, kernel).sum(0).unsqueeze(1)


class _DepthwiseConv(torch.autograd.Function):
    """A stride-1, bias-free depthwise convolution whose weight gradient is ``depthwise_weight_grad``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        p = ctx.padding
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], weight.shape[0], [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad, weight.shape[-1], p)
        return grad_x, grad_w, None


def eligible(conv: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` that is depthwise, square, stride 1, "same"-padded with zeros, bias-free and trained,
    with a kernel of at least ``MIN_KERNEL``."""
    if type(conv) is not nn.Conv2d or conv.bias is not None or not conv.weight.requires_grad:
        return False
    k = conv.kernel_size[0]
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.kernel_size == (k, k)
        and k >= MIN_KERNEL
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding == (k // 2, k // 2)
        and conv.padding_mode == "zeros"
    )


def _forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] <= MAX_SIDE and x.shape[-2] <= MAX_SIDE and torch.is_grad_enabled():
        return _DepthwiseConv.apply(x, conv.weight, conv.padding[0])
    return F.conv2d(x, conv.weight, None, 1, conv.padding, 1, conv.groups)


@contextmanager
def faster_weight_grads(model: nn.Module, device: torch.device) -> Iterator[int]:
    """Within the block, the ``eligible`` convolutions of ``model`` compute their weight gradient by
    ``depthwise_weight_grad`` on maps of at most ``MAX_SIDE`` pixels a side; on a CPU only (a GPU's libraries have no
    such gap). Yields how many convolutions it covers; the model is as it was after the block."""
    convs = [m for m in model.modules() if eligible(m)] if device.type == "cpu" else []
    for conv in convs:
        conv.forward = _forward.__get__(conv)
    try:
        yield len(convs)
    finally:
        for conv in convs:
            del conv.forward
