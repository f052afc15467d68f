"""LRN's cases and shared test bodies: one implementation against
F.local_response_norm computed in float64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import assert_close_to_reference, emulated_ops, placement, random_tensor

import alexnet_kernels as ak

# AlexNet's LRN: size 5, alpha 1e-4, beta 0.75, k 2 (the paper), plus settings
# where the window sum dominates S, so that a wrong window shows.
PAPER = (5, 1e-4, 0.75, 2.0)
STRONG = (5, 0.5, 0.75, 1.0)

# (shape, (size, alpha, beta, k)): odd sizes, C < size, even sizes, 3-D and 5-D,
# exponents with and without a special-cased fast path.
ODD_CASES = [
    ((3, 7, 5, 3), (3, 0.3, 0.75, 1.0)),
    ((1, 3, 4, 4), (5, 0.9, 0.75, 2.0)),
    ((2, 6, 5), (4, 0.7, 0.6, 1.5)),
    ((2, 5, 3, 4, 2), (2, 0.4, 0.5, 1.0)),
    ((2, 37, 9, 11), (7, 0.2, 1.0, 0.5)),
    ((1, 33, 1, 1), (1, 0.6, 0.9, 1.0)),
    ((2, 70, 3, 5), (6, 0.25, 0.75, 2.0)),
]


# ---- providers ---------------------------------------------------------------


def forward_backward(provider: str, x: torch.Tensor, grad_y: torch.Tensor,
                     params: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, grad_x) of one implementation, all on CPU tensors."""
    size, alpha, beta, k = params
    if provider == "emulated_cuda":
        ops = emulated_ops()
        y = ops.lrn(x, size, alpha, beta, k)
        return y, ops.lrn_backward(grad_y, x, y, size, alpha, beta, k)
    where = placement(provider)
    with where.context:
        xd = x.detach().to(where.device).requires_grad_()
        y = ak.lrn(xd, size, alpha, beta, k, backend=where.backend)
        y.backward(grad_y.to(where.device))
    return y.detach().cpu(), xd.grad.cpu()


def reference(x: torch.Tensor, grad_y: torch.Tensor, params: tuple):
    size, alpha, beta, k = params
    x64 = x.detach().double().requires_grad_()
    y64 = F.local_response_norm(x64, size, alpha, beta, k)
    y64.backward(grad_y.double())
    return y64.detach(), x64.grad


def check_against_reference(provider: str, shape, dtype, params, seed: int,
                            channels_last: bool = False) -> None:
    x = random_tensor(shape, dtype, seed, channels_last)
    grad_y = random_tensor(shape, dtype, seed + 1, channels_last)
    y, grad_x = forward_backward(provider, x, grad_y, params)
    y_ref, grad_ref = reference(x, grad_y, params)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close_to_reference(y, y_ref)
    # The backward reads the rounded y, so compare it with the reference
    # gradient at the same inputs.
    assert_close_to_reference(grad_x, grad_ref)
    if channels_last:
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        assert y.is_contiguous(memory_format=fmt)
