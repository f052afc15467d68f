"""Max pooling's cases and shared test bodies: one implementation against
F.max_pool2d computed in float64."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from helpers import assert_close_to_reference, emulated_ops, placement, random_tensor

import alexnet_kernels as ak
from alexnet_kernels.ops.max_pool import PoolGeometry, argmax_to_indices

# (kernel_size, stride, padding, dilation, ceil_mode)
ALEXNET_POOL = (3, 2, 0, 1, False)
WINDOWS = [
    ALEXNET_POOL,
    (2, None, 0, 1, False),            # stride defaults to the kernel
    (3, 1, 1, 1, False),               # overlapping, padded
    (3, 2, 1, 1, True),                # ceil mode with padding
    ((3, 2), (2, 1), (1, 0), (2, 3), True),
    ((2, 4), (3, 2), (1, 2), 1, True),  # ceil mode drops a window starting in the padding
    (1, 1, 0, 1, False),
    ((5, 3), (1, 3), (2, 1), (1, 2), False),
    (4, 3, 2, 1, False),
]


# ---- providers ---------------------------------------------------------------

def forward_backward(provider: str, x: torch.Tensor, grad_y: torch.Tensor | None,
                     window: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(y, indices, grad_x) of one implementation on CPU tensors (4-D x)."""
    geometry = PoolGeometry(x.shape, *window)
    if provider == "emulated_cuda":
        ops = emulated_ops()
        y, argmax = ops.max_pool2d(x, *geometry.op_arguments())
        grad_x = None if grad_y is None else ops.max_pool2d_backward(
            grad_y, argmax, list(x.shape), *geometry.op_arguments())
        return y, argmax_to_indices(argmax, geometry), grad_x
    where = placement(provider)
    with where.context:
        xd = x.detach().to(where.device).requires_grad_()
        y, indices = ak.max_pool2d(xd, *window, return_indices=True, backend=where.backend)
        if grad_y is not None:
            y.backward(grad_y.to(where.device))
    grad_x = None if grad_y is None else xd.grad.cpu()
    return y.detach().cpu(), indices.cpu(), grad_x


def padding_only_windows(x: torch.Tensor, *window) -> torch.Tensor:
    """Where a window holds no element of x, only padding (possible with dilation and in
    ceil mode): bool, of the pooled shape."""
    return F.max_pool2d(torch.ones(x.shape, dtype=torch.float64), *window).isneginf()


def reference_gradient_of(grad_y: torch.Tensor, x: torch.Tensor, *window) -> torch.Tensor:
    """grad_y as the reference backward must see it: zero for windows of padding only.

    Their maximum is -inf and comes from no element of x, so their gradient goes
    nowhere; PyTorch's backward (2.14) instead adds it at the window's "index", which
    then lies outside the input plane: into the next channel's plane, or past the
    tensor's end.
    """
    grad = grad_y.double()
    return torch.where(padding_only_windows(x, *window), torch.zeros_like(grad), grad)


def reference(x: torch.Tensor, grad_y: torch.Tensor | None, window: tuple):
    x64 = x.detach().double().requires_grad_()
    y64, indices = F.max_pool2d(x64, *window, return_indices=True)
    if grad_y is not None:
        y64.backward(reference_gradient_of(grad_y, x, *window))
    return y64.detach(), indices, x64.grad


def output_shape(x: torch.Tensor, window: tuple) -> tuple[int, ...]:
    return PoolGeometry(x.shape, *window).output_shape


def check_against_reference(provider: str, shape, dtype, window, seed: int,
                            channels_last: bool = False) -> None:
    x = random_tensor(shape, dtype, seed, channels_last)
    grad_y = random_tensor(output_shape(x, window), dtype, seed + 1, channels_last)
    y, indices, grad_x = forward_backward(provider, x, grad_y, window)
    y_ref, indices_ref, grad_ref = reference(x, grad_y, window)
    assert y.dtype == dtype and y.shape == y_ref.shape
    # The maximum is one of the inputs: exact in every dtype.
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=0)
    torch.testing.assert_close(indices, indices_ref, rtol=0, atol=0)
    assert_close_to_reference(grad_x, grad_ref)
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert grad_x.is_contiguous(memory_format=torch.channels_last)


def ties_nan_and_inf(shape, seed: int, channels_last: bool) -> torch.Tensor:
    """Integers in [-3, 3] (many exact ties) with NaN, +inf and -inf sprinkled in."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, shape, generator=generator).double()
    pick = torch.rand(shape, generator=generator)
    x[pick < 0.04] = math.nan
    x[(pick >= 0.04) & (pick < 0.08)] = math.inf
    x[(pick >= 0.08) & (pick < 0.20)] = -math.inf
    # Whole windows of -inf: the argmax is then the window's first position.
    x[..., :3, :3] = -math.inf
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x

