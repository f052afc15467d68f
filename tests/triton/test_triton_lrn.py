"""LRN in Triton against F.local_response_norm in float64 and against the CPU
kernel. Runs in Triton's interpreter on machines without a GPU (see
TRITON_DEVICE in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch
from cases.lrn import ODD_CASES, PAPER, STRONG, check_against_reference, forward_backward, reference
from helpers import (
    TRITON_DEVICE,
    TRITON_DTYPES,
    assert_close_to_reference,
    random_tensor,
    require_native_cpu,
)

import alexnet_kernels as ak
from alexnet_kernels.triton import lrn as triton_lrn


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(ODD_CASES)))
def test_odd_shapes(dtype: torch.dtype, case: int) -> None:
    """C < size, even sizes, 3-D and 5-D input, exponents with and without CPU fast paths."""
    shape, params = ODD_CASES[case]
    check_against_reference("triton", shape, dtype, params, seed=100 + case)


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 5, 3), (2, 5, 3, 4, 2)], ids=str)
def test_channels_last(dtype: torch.dtype, shape) -> None:
    check_against_reference("triton", shape, dtype, STRONG, seed=7, channels_last=True)


def test_alexnet_shape() -> None:
    """The first LRN of AlexNet, one image: several pixel tiles, a full channel tile."""
    check_against_reference("triton", (1, 96, 55, 55), torch.float32, PAPER, seed=1)
    check_against_reference("triton", (1, 96, 55, 55), torch.float32, STRONG, seed=2,
                            channels_last=True)


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_matches_native_cpu(dtype: torch.dtype, channels_last: bool) -> None:
    """Same y and grad_x as the compiled CPU kernel, within the dtype's tolerance."""
    require_native_cpu()
    x = random_tensor((2, 37, 9, 11), dtype, seed=61, channels_last=channels_last)
    grad_y = random_tensor(tuple(x.shape), dtype, seed=62, channels_last=channels_last)
    params = (7, 0.2, 0.75, 0.5)
    y, grad_x = forward_backward("triton", x, grad_y, params)
    y_native, grad_native = forward_backward("native", x, grad_y, params)
    assert y.stride() == y_native.stride() and grad_x.stride() == grad_native.stride()
    assert_close_to_reference(y, y_native.double())
    assert_close_to_reference(grad_x, grad_native.double())


def test_non_contiguous_input() -> None:
    base = random_tensor((5, 3, 9, 4), torch.float32, seed=11)
    x = base.transpose(0, 1)  # neither contiguous nor channels_last: copied to contiguous
    grad_y = random_tensor(tuple(x.shape), torch.float32, seed=12)
    y, grad_x = forward_backward("triton", x, grad_y, STRONG)
    y_ref, grad_ref = reference(x, grad_y, STRONG)
    assert y.is_contiguous()
    assert_close_to_reference(y, y_ref)
    assert_close_to_reference(grad_x, grad_ref)


@pytest.mark.parametrize("shape", [(0, 8, 3, 3), (2, 0, 3, 3), (2, 4, 0, 3)], ids=str)
def test_empty(shape) -> None:
    x = torch.empty(shape)
    y, grad_x = forward_backward("triton", x, torch.empty(shape), PAPER)
    assert y.shape == shape and grad_x.shape == shape


def test_float64_is_rejected() -> None:
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64, device=TRITON_DEVICE)
    with pytest.raises(TypeError, match="supports float32, float16 and bfloat16"):
        ak.lrn(x, 3, backend="triton")


def test_opcheck() -> None:
    """Schema and autograd registration of both ops; the fake-tensor and
    AOT-dispatch checks on a GPU only: the interpreter reads the storage of the
    tensors it is given, which fake tensors do not have."""
    x = random_tensor((2, 7, 4, 5), torch.float32, seed=31).to(TRITON_DEVICE)
    args = (5, 0.1, 0.75, 2.0)
    checks = ("test_schema", "test_autograd_registration")
    if TRITON_DEVICE == "cuda":
        checks += ("test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(torch.ops.alexnet_kernels.lrn_triton.default,
                          (x.requires_grad_(), *args), test_utils=checks)
    x = x.detach()
    y = triton_lrn.lrn(x, *args)
    g = random_tensor(tuple(x.shape), torch.float32, seed=32).to(TRITON_DEVICE)
    torch.library.opcheck(torch.ops.alexnet_kernels.lrn_backward_triton.default,
                          (g, x, y, *args), test_utils=checks)


def test_torch_compile_fullgraph_on_gpu() -> None:
    if TRITON_DEVICE != "cuda":
        pytest.skip("torch.compile of a triton_op needs a GPU (the interpreter cannot run "
                    "kernels on fake tensors)")
    norm = ak.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0, backend="triton")
    compiled = torch.compile(norm, fullgraph=True)
    x = random_tensor((4, 96, 13, 13), torch.float32, seed=71).cuda().requires_grad_()
    y = compiled(x)
    y.square().sum().backward()
    y_ref, grad_ref = reference(x.detach().cpu(), (2 * y.detach()).cpu(), PAPER)
    assert_close_to_reference(y.detach().cpu(), y_ref)
    assert_close_to_reference(x.grad.cpu(), grad_ref)
