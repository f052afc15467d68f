"""The CPU training step's own passes: the ReLU mask of the fused conv backward.

The mask is reached through the raw ``conv2d_relu_backward`` op with a 1x1 identity
weight, whose input gradient is then the masked grad_y exactly in every dtype
(products with 1 and sums with 0), so it can be compared bit for bit with
``threshold_backward`` in float64, F.relu's backward.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    NATIVE_CPU_PROVIDERS,
    assert_close_to_reference,
    native_cpu_context,
    random_tensor,
    require_native_cpu,
)

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Special outputs y: both zeros, NaNs of both signs, infinities, the smallest
# subnormals of each sign (float32, float16) and values just either side of zero.
SPECIALS = [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1e-45, -1e-45, 6e-8, -6e-8,
            1e-3, -1e-3]


def _outputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random y of both signs with every special value scattered through it."""
    y = random_tensor(shape, torch.float64, seed=seed).to(dtype)
    flat = y.view(-1)
    generator = torch.Generator().manual_seed(seed + 1)
    positions = torch.randperm(flat.numel(), generator=generator)[: 4 * len(SPECIALS)]
    for i, position in enumerate(positions.tolist()):
        flat[position] = SPECIALS[i % len(SPECIALS)]
    return y


def _masked_by_the_op(grad_y: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    channels = y.shape[1]
    eye = torch.eye(channels, dtype=y.dtype).view(channels, channels, 1, 1)
    x = torch.zeros_like(y)  # only its shape, dtype and layout matter for grad_x
    grad_x, _, _ = torch.ops.alexnet_kernels.conv2d_relu_backward(
        grad_y, x, eye, y, [1, 1], [0, 0], [1, 1], 1, [True, False, False])
    return grad_x


# (2, 3, 7, 5): a tail shorter than any vector; (4, 64, 55, 55): conv1 of AlexNet at
# batch 4, several parallel work items.
SHAPES = [(2, 3, 7, 5), (4, 64, 55, 55)]


@pytest.mark.parametrize("provider", list(NATIVE_CPU_PROVIDERS))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=["odd", "conv1"])
def test_relu_mask_is_relus_backward(shape, dtype: torch.dtype, channels_last: bool,
                                     provider: str) -> None:
    """Zero where y <= 0 (both zeros, -inf, negative subnormals), grad_y elsewhere,
    NaN outputs included, as F.relu's backward (threshold_backward) gives."""
    if shape[0] > 2 and provider != "native":
        pytest.skip("the large shape runs on the detected instruction set only")
    format = torch.channels_last if channels_last else torch.contiguous_format
    y = _outputs(shape, dtype, seed=110).contiguous(memory_format=format)
    grad_y = random_tensor(shape, dtype, seed=112).contiguous(memory_format=format)
    with native_cpu_context(provider):
        ours = _masked_by_the_op(grad_y, y)
    expected = torch.ops.aten.threshold_backward(grad_y.double(), y.double(), 0)
    assert torch.equal(ours.double(), expected)
    assert ours.dtype == dtype


def test_relu_mask_of_differently_laid_out_operands() -> None:
    """A channels_last grad_y for an NCHW y cannot be masked in one flat pass; the
    result is the same."""
    require_native_cpu()
    y = _outputs((2, 5, 6, 7), torch.float32, seed=113)
    grad_y = random_tensor((2, 5, 6, 7), torch.float32, seed=114).contiguous(
        memory_format=torch.channels_last)
    expected = torch.ops.aten.threshold_backward(grad_y.double(), y.double(), 0)
    assert torch.equal(_masked_by_the_op(grad_y, y).double(), expected)



def test_a_freed_large_output_is_reused_and_fully_rewritten() -> None:
    """Outputs of 16 MiB and more come from blocks that the next output of the same
    size reuses (no fresh pages to fault in on every training step). A reused block
    holds the previous output until the kernel overwrites all of it, so the values
    are the check that matters; the address alone could also come back from the OS."""
    require_native_cpu()
    x = random_tensor((1, 64, 256, 256), torch.float32, seed=115)  # 16.8 MB
    first = torch.ops.alexnet_kernels.lrn(x, 5, 1e-4, 0.75, 2.0)
    address = first.data_ptr()
    del first
    # An unmapped block's addresses would go to the next mapping of that size: this one.
    unrelated = torch.empty(x.shape)
    other = x.flip(1).contiguous()
    second = torch.ops.alexnet_kernels.lrn(other, 5, 1e-4, 0.75, 2.0)
    assert second.data_ptr() == address and unrelated.data_ptr() != address
    expected = torch.nn.functional.local_response_norm(other.double(), 5, 1e-4, 0.75, 2.0)
    assert_close_to_reference(second, expected)
