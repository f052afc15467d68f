"""Max pooling in Triton against F.max_pool2d in float64 and against the CPU
kernel (same y, same argmax). Runs in Triton's interpreter on machines without
a GPU (helpers.TRITON_DEVICE)."""

from __future__ import annotations

import pytest
import torch
from cases.max_pool import (
    ALEXNET_POOL,
    WINDOWS,
    check_against_reference,
    forward_backward,
    output_shape,
    reference,
    ties_nan_and_inf,
)
from helpers import (
    TRITON_DEVICE,
    TRITON_DTYPES,
    assert_close_to_reference,
    random_tensor,
    require_native_cpu,
)

import alexnet_kernels as ak
from alexnet_kernels.ops.max_pool import PoolGeometry
from alexnet_kernels.triton import max_pool as triton_max_pool

# Windows of several shapes: AlexNet's, padded ceil mode, dilated, rectangular.
SOME_WINDOWS = [WINDOWS[0], WINDOWS[3], WINDOWS[4], WINDOWS[5], WINDOWS[7]]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_windows(window) -> None:
    check_against_reference("triton", (2, 3, 7, 9), torch.float32, window, seed=10)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("window", [ALEXNET_POOL, (3, 2, 1, 1, True), ((2, 3), 1, 1, 2, False)],
                         ids=str)
def test_dtypes_and_layouts(window, dtype: torch.dtype, channels_last: bool) -> None:
    check_against_reference("triton", (2, 37, 9, 11), dtype, window, seed=20,
                            channels_last=channels_last)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("window", [ALEXNET_POOL, (3, 1, 1, 1, False), (2, 2, 1, 2, True)],
                         ids=str)
def test_nan_inf_and_ties_follow_pytorch(window, channels_last: bool) -> None:
    for dtype in TRITON_DTYPES:
        x = ties_nan_and_inf((2, 6, 11, 10), seed=40, channels_last=channels_last).to(dtype)
        grad_y = random_tensor(output_shape(x, window), dtype, 41, channels_last)
        y, indices, grad_x = forward_backward("triton", x, grad_y, window)
        y_ref, indices_ref, grad_ref = reference(x, grad_y, window)
        torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(indices, indices_ref, rtol=0, atol=0)
        assert_close_to_reference(grad_x, grad_ref)


def test_large_window_uses_int32_argmax() -> None:
    window = ((17, 16), (3, 5), (8, 2), 1, True)  # 272 positions, loops not unrolled
    check_against_reference("triton", (2, 3, 20, 21), torch.float32, window, seed=50)
    check_against_reference("triton", (2, 3, 20, 21), torch.bfloat16, window, seed=51,
                            channels_last=True)


def test_alexnet_shape() -> None:
    check_against_reference("triton", (1, 96, 55, 55), torch.float32, ALEXNET_POOL, seed=30)


def test_64_bit_indexing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The INT64 variant, taken from 2^31 elements, on tensors small enough to test."""
    monkeypatch.setattr(triton_max_pool, "_INT32_LIMIT", 0)
    for channels_last in (False, True):
        check_against_reference("triton", (2, 5, 9, 11), torch.float16, (3, 2, 1, 1, True),
                                seed=55, channels_last=channels_last)


def test_non_contiguous_input_unbatched_and_empty() -> None:
    x = random_tensor((5, 3, 9, 8), torch.float32, seed=60).transpose(0, 1)
    grad_y = random_tensor(output_shape(x, ALEXNET_POOL), torch.float32, seed=61)
    y, _, grad_x = forward_backward("triton", x, grad_y, ALEXNET_POOL)
    y_ref, _, grad_ref = reference(x, grad_y, ALEXNET_POOL)
    assert torch.equal(y.double(), y_ref)
    assert_close_to_reference(grad_x, grad_ref)

    x3 = random_tensor((4, 10, 9), torch.float32, seed=70).to(TRITON_DEVICE)
    y, indices = ak.max_pool2d(x3, 3, 2, 1, return_indices=True, backend="triton")
    y_ref, indices_ref = torch.nn.functional.max_pool2d(x3, 3, 2, 1, return_indices=True)
    assert y.shape == (4, 5, 5)
    assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref)

    for channels_last in (False, True):
        x0 = torch.empty(0, 4, 9, 9)
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        y, indices, grad_x = forward_backward("triton", x0, torch.empty(0, 4, 4, 4),
                                              ALEXNET_POOL)
        assert y.shape == indices.shape == (0, 4, 4, 4) and grad_x.shape == x0.shape


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
def test_same_y_argmax_and_gradient_as_the_cpu_kernel(dtype: torch.dtype) -> None:
    require_native_cpu()
    for seed, window in enumerate(SOME_WINDOWS):
        for channels_last in (False, True):
            x = random_tensor((2, 7, 13, 12), dtype, seed, channels_last)
            x[0, 1, 2:5, 3:7] = 1.0  # ties
            x[1, 2, 6, 6] = float("nan")
            arguments = PoolGeometry(x.shape, *window).op_arguments()
            y_cpu, argmax_cpu = torch.ops.alexnet_kernels.max_pool2d(x, *arguments)
            y, argmax = triton_max_pool.max_pool2d(x.to(TRITON_DEVICE), *arguments)
            assert y.stride() == y_cpu.stride() and argmax.dtype == argmax_cpu.dtype
            assert torch.equal(argmax.cpu(), argmax_cpu)
            torch.testing.assert_close(y.cpu(), y_cpu, rtol=0, atol=0, equal_nan=True)
            grad_y = random_tensor(tuple(y.shape), dtype, seed + 100, channels_last)
            grad_cpu = torch.ops.alexnet_kernels.max_pool2d_backward(
                grad_y, argmax_cpu, list(x.shape), *arguments)
            grad = triton_max_pool.max_pool2d_backward(
                grad_y.to(TRITON_DEVICE), argmax, list(x.shape), *arguments)
            assert grad.stride() == grad_cpu.stride()
            # The NHWC CPU kernel sums the covering windows in (oh, ow) order in fp32
            # too (the NCHW one in its own order). Triton's interpreter rounds
            # fp32 -> bf16 toward zero, a GPU to nearest as the CPU does.
            if channels_last and (dtype != torch.bfloat16 or TRITON_DEVICE == "cuda"):
                assert torch.equal(grad.cpu(), grad_cpu)
            else:
                assert_close_to_reference(grad.cpu(), grad_cpu.double())


def test_backward_checks_its_arguments() -> None:
    arguments = PoolGeometry((1, 2, 6, 6), 3, 2, 0, 1, False).op_arguments()
    x = torch.randn(1, 2, 6, 6, device=TRITON_DEVICE)
    y, argmax = triton_max_pool.max_pool2d(x, *arguments)
    with pytest.raises(ValueError, match="must have the forward's output shape"):
        triton_max_pool.max_pool2d_backward(y[:, :, :1], argmax, [1, 2, 6, 6], *arguments)
    with pytest.raises(ValueError, match=r"argmax must be torch\.uint8"):
        triton_max_pool.max_pool2d_backward(y, argmax.int(), [1, 2, 6, 6], *arguments)


def test_opcheck_schema_and_autograd_registration() -> None:
    """What of opcheck runs here. Fake-tensor propagation (and so torch.compile) of
    a triton_op calls the kernel on tensors without storage, which Triton's
    interpreter cannot do: those checks need a GPU."""
    x = random_tensor((2, 5, 9, 8), torch.float32, seed=90).to(TRITON_DEVICE)
    geometry = PoolGeometry(x.shape, 3, 2, 1, 1, True)
    utils = ("test_schema", "test_autograd_registration")
    if TRITON_DEVICE == "cuda":
        utils += ("test_faketensor", "test_aot_dispatch_dynamic")
    ops = torch.ops.alexnet_kernels
    torch.library.opcheck(ops.max_pool2d_triton.default,
                          (x.clone().requires_grad_(), *geometry.op_arguments()),
                          test_utils=utils)
    _, argmax = ops.max_pool2d_triton(x, *geometry.op_arguments())
    grad_y = random_tensor(geometry.output_shape, torch.float32, seed=91).to(TRITON_DEVICE)
    torch.library.opcheck(ops.max_pool2d_backward_triton.default,
                          (grad_y, argmax, list(x.shape), *geometry.op_arguments()),
                          test_utils=utils)


def test_torch_compile_fullgraph_on_gpu() -> None:
    if TRITON_DEVICE != "cuda":
        pytest.skip("torch.compile of a triton_op needs a GPU (the interpreter cannot run "
                    "kernels on fake tensors)")
    torch._dynamo.reset()
    module = ak.nn.MaxPool2d(3, 2, backend="triton")
    compiled = torch.compile(module, fullgraph=True)
    x = random_tensor((2, 16, 27, 27), torch.float32, seed=92).cuda().requires_grad_()
    y = compiled(x)
    y.square().sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    y_ref = torch.nn.functional.max_pool2d(x_ref, 3, 2)
    y_ref.square().sum().backward()
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)
