"""The depthwise weight gradient by one grouped convolution: against torch's own gradient and against brute force,
and the training step with it equals the one without (up to the order of sums)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from embedlab.vision.depthwise import MAX_SIDE, depthwise_weight_grad, eligible, faster_weight_grads


def brute_force(x: torch.Tensor, grad: torch.Tensor, k: int, p: int) -> torch.Tensor:
    """dL/dw[c, 0, i, j] = sum over images and output pixels of grad[n, c, y, x] * padded_x[n, c, y + i, x + j]."""
    padded = F.pad(x, (p, p, p, p))
    h, w = grad.shape[2:]
    out = torch.zeros(x.shape[1], 1, k, k, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out[:, 0, i, j] = (padded[:, :, i : i + h, j : j + w] * grad).sum((0, 2, 3))
    return out


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 6),
    side=st.integers(1, 9),
    k=st.sampled_from([1, 3, 5, 7]),
    channels_last=st.booleans(),
)
def test_weight_grad_equals_brute_force_and_torch(n, c, side, k, channels_last):
    g = torch.Generator().manual_seed(n * 1000 + c * 100 + side * 10 + k)
    x = torch.randn(n, c, side, side, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(x, w, padding=k // 2, groups=c)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(grad)
    mine = depthwise_weight_grad(x, grad, k, k // 2)
    torch.testing.assert_close(mine, brute_force(x, grad, k, k // 2))
    torch.testing.assert_close(mine, w.grad)


def test_gradcheck_of_the_covered_convolution():
    conv = nn.Conv2d(3, 3, 5, padding=2, groups=3, bias=False).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    with faster_weight_grads(conv, torch.device("cpu")) as covered:
        assert covered == 1
        assert type(conv(x).grad_fn).__name__ == "_DepthwiseConvBackward"
        assert torch.autograd.gradcheck(lambda x, w: conv(x), (x, conv.weight))
    with torch.no_grad(), faster_weight_grads(conv, torch.device("cpu")):
        assert conv(x).grad_fn is None  # inference (and export) takes torch's own path


def test_which_convolutions_are_covered():
    depthwise5 = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
    assert eligible(depthwise5)
    assert not eligible(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False))  # oneDNN is fast at 3x3
    assert not eligible(nn.Conv2d(8, 8, 5, padding=2, stride=2, groups=8, bias=False))
    assert not eligible(nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=True))
    assert not eligible(nn.Conv2d(8, 16, 5, padding=2, groups=8, bias=False))
    assert not eligible(nn.Conv2d(8, 8, 5, padding=2, bias=False))  # not depthwise
    frozen = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False).requires_grad_(False)
    assert not eligible(frozen)
    with faster_weight_grads(nn.Sequential(depthwise5), torch.device("meta")) as covered:
        assert covered == 0  # a GPU's libraries have no such gap


@pytest.mark.parametrize("side", [MAX_SIDE, MAX_SIDE + 1])
def test_training_with_it_equals_training_without(side):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(4, 16, 1), nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=False), nn.ReLU(), nn.Flatten()
    )
    x = torch.randn(6, 4, side, side).contiguous(memory_format=torch.channels_last)
    grads = []
    for faster in (False, True):
        net.zero_grad()
        if faster:
            with faster_weight_grads(net, torch.device("cpu")):
                out = net[1](net[0](x))
                assert (type(out.grad_fn).__name__ == "_DepthwiseConvBackward") == (side <= MAX_SIDE)
                net(x).square().sum().backward()
        else:
            net(x).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert type(net[1]).forward is nn.Conv2d.forward and "forward" not in vars(net[1])  # as it was after the block
