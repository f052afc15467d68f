"""Fused conv2d + bias + ReLU's cases and shared test bodies: one implementation
against F.relu(F.conv2d) computed in float64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import TOLERANCES, emulated_ops, placement, random_tensor

import alexnet_kernels as ak

# (input, weight, stride, padding, dilation, groups): 1x1 kernels, stride larger
# than the kernel, non-square everything, dilation, Cout not a multiple of any tile.
ODD_CASES = [
    ((3, 7, 9), (5, 3, 1, 1), 1, 0, 1, 1),
    ((4, 11, 10), (7, 4, 2, 2), 3, 0, 1, 1),
    ((6, 9, 13), (9, 2, 3, 5), (2, 1), (1, 2), (1, 2), 3),
    ((2, 5, 5), (3, 2, 5, 5), 1, 2, 1, 1),
    ((5, 12, 8), (13, 5, 4, 3), (1, 2), (2, 1), 2, 1),
]


def as_pair(value) -> list[int]:
    return list(value) if isinstance(value, tuple) else [value, value]


def assert_close_scaled(actual: torch.Tensor, expected64: torch.Tensor) -> None:
    """Per-dtype tolerance relative to the largest reference value: a convolution sums
    Cin * KH * KW products, so the absolute error scales with the output's magnitude."""
    rtol, _ = TOLERANCES[actual.dtype]
    scale = max(expected64.abs().max().item(), 1.0)
    torch.testing.assert_close(actual.double(), expected64, rtol=rtol, atol=rtol * scale)


def forward_backward(provider: str, leaves: list[torch.Tensor], stride, padding, dilation,
                     groups, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(y, grad_y, [grad_x, grad_w(, grad_b)]) of one implementation, on CPU tensors.

    ``leaves`` is [x, w] or [x, w, b]; "emulated_cuda" calls the CUDA kernels
    run by the emulator directly, the others go through autograd.
    """
    dtype = leaves[0].dtype
    if provider == "emulated_cuda":
        ops = emulated_ops()
        x, w = leaves[0], leaves[1]
        b = leaves[2] if len(leaves) == 3 else None
        arguments = (as_pair(stride), as_pair(padding), as_pair(dilation), groups)
        y = ops.conv2d_relu(x, w, b, *arguments)
        grad_y = random_tensor(tuple(y.shape), dtype, seed + 3)
        grads = ops.conv2d_relu_backward(grad_y, x, w, y, *arguments, [True, True, b is not None])
        return y, grad_y, list(grads[:len(leaves)])
    where = placement(provider)
    with where.context:
        inputs = [t.to(where.device).requires_grad_() for t in leaves]
        y = ak.conv2d_relu(inputs[0], inputs[1], inputs[2] if len(inputs) == 3 else None,
                           stride, padding, dilation, groups, backend=where.backend)
        grad_y = random_tensor(tuple(y.shape), dtype, seed + 3)
        y.backward(grad_y.to(where.device))
    return y.detach().cpu(), grad_y, [t.grad.cpu() for t in inputs]


def check_against_reference(provider: str, x_shape, w_shape, stride, padding, dilation,
                            groups, dtype, seed: int, channels_last: bool = False,
                            bias: bool = True) -> None:
    x = random_tensor(x_shape, dtype, seed, channels_last)
    w = random_tensor(w_shape, dtype, seed + 1) / (w_shape[1] * w_shape[2] * w_shape[3]) ** 0.5
    leaves = [x, w] + ([random_tensor((w_shape[0],), dtype, seed + 2)] if bias else [])
    y, grad_y, grads = forward_backward(provider, leaves, stride, padding, dilation, groups, seed)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    pre64 = F.conv2d(leaves64[0], leaves64[1], leaves64[2] if bias else None, stride, padding,
                     dilation, groups)
    assert y.dtype == dtype
    assert_close_scaled(y, F.relu(pre64).detach())
    # The backward's ReLU mask is the op's own output > 0 (an element whose
    # pre-activation rounds across zero may differ from the float64 one).
    pre64.backward(grad_y.double() * (y > 0))
    for ours, reference in zip(grads, leaves64, strict=True):
        assert ours.shape == reference.shape and ours.dtype == dtype
        assert_close_scaled(ours, reference.grad)
    if channels_last and provider != "torch":
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert grads[0].is_contiguous(memory_format=torch.channels_last)
