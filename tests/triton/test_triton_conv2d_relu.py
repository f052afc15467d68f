"""Fused conv2d + bias + ReLU in Triton against F.conv2d in float64 and against the
CPU kernel. Runs in Triton's interpreter on machines without a GPU (see
TRITON_DEVICE in tests/conftest.py), where tl.dot computes in full fp32 whatever
precision it is asked for; on a GPU the fp32 checks turn TF32 off, and one test
checks the TF32 path with a TF32 tolerance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cases.conv2d_relu import ODD_CASES, check_against_reference
from helpers import (
    TRITON_DEVICE,
    TRITON_DTYPES,
    assert_close_to_reference,
    assert_compiled_matches_eager,
    random_tensor,
    require_native_cpu,
)

import alexnet_kernels as ak
from alexnet_kernels.triton import conv2d_relu as triton_conv2d_relu

# (input (C, H, W), weight, stride, padding, dilation, groups): AlexNet's kinds of
# layer with fewer channels and pixels, so the interpreter runs them quickly.
DOWNSIZED_LAYERS = {
    "conv1-11x11-stride4-pad2": ((3, 19, 23), (16, 3, 11, 11), 4, 2, 1, 1),
    "paper-conv2-grouped-5x5": ((12, 9, 8), (20, 6, 5, 5), 1, 2, 1, 2),
    "conv3-3x3": ((40, 6, 7), (36, 40, 3, 3), 1, 1, 1, 1),
    # grad_x's stride phases: uneven ones (padding not a multiple of half the
    # stride), and stride 3 with dilation 2 (each phase's tap at another kernel row).
    "stride-2x3-pad-1x2": ((5, 10, 9), (6, 5, 3, 4), (2, 3), (1, 2), 1, 1),
    "stride3-dilation2": ((3, 11, 12), (4, 3, 3, 3), 3, 2, 2, 1),
}


@pytest.fixture(autouse=True)
def _full_fp32_dot():
    """fp32 compared at fp32's tolerance: no TF32 (the interpreter never uses it)."""
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        yield


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(ODD_CASES)))
def test_odd_shapes(dtype: torch.dtype, case: int) -> None:
    """1x1 kernels, stride > kernel, non-square, dilation, groups=3, Cout not a multiple
    of a block; batch 1 contiguous and batch 3 channels_last."""
    x_shape, w_shape, stride, padding, dilation, groups = ODD_CASES[case]
    for batch, channels_last in ((1, False), (3, True)):
        check_against_reference("triton", (batch, *x_shape), w_shape, stride, padding, dilation,
                                groups, dtype, seed=10 + case, channels_last=channels_last)


@pytest.mark.parametrize("layer", list(DOWNSIZED_LAYERS))
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
def test_alexnet_layer_kinds(layer: str, dtype: torch.dtype) -> None:
    x_shape, w_shape, stride, padding, dilation, groups = DOWNSIZED_LAYERS[layer]
    check_against_reference("triton", (2, *x_shape), w_shape, stride, padding, dilation, groups,
                            dtype, seed=40, channels_last=dtype == torch.float16)


def test_real_alexnet_layer() -> None:
    """The paper's grouped conv5 (384 -> 256 in two groups, 3x3 on 13x13), one image."""
    check_against_reference("triton", (1, 384, 13, 13), (256, 192, 3, 3), 1, 1, 1, 2,
                            torch.float32, seed=41, channels_last=True)


def test_without_bias_unbatched_and_non_contiguous() -> None:
    check_against_reference("triton", (2, 4, 9, 9), (6, 4, 3, 3), 1, 1, 1, 1, torch.float32,
                            seed=20, bias=False)
    x = random_tensor((4, 9, 9), torch.float32, seed=21).to(TRITON_DEVICE)
    w = random_tensor((6, 4, 3, 3), torch.float32, seed=22).to(TRITON_DEVICE)
    y = ak.conv2d_relu(x, w, padding=1, backend="triton")
    assert y.shape == (6, 9, 9)
    assert_close_to_reference(y.cpu(), F.relu(F.conv2d(x.cpu().double(), w.cpu().double(),
                                                        padding=1)))
    # Neither contiguous nor channels_last, and a weight view: read through the strides.
    x = random_tensor((3, 2, 8, 7), torch.float32, seed=23).transpose(0, 1).to(TRITON_DEVICE)
    w = random_tensor((3, 6, 3, 5), torch.float32, seed=24).transpose(0, 1).to(TRITON_DEVICE)
    y = ak.conv2d_relu(x, w, stride=2, backend="triton")
    assert_close_to_reference(y.cpu(), F.relu(F.conv2d(x.cpu().double(), w.cpu().double(),
                                                       stride=2)))


def test_empty_batch() -> None:
    x = torch.empty(0, 3, 9, 9, device=TRITON_DEVICE, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=TRITON_DEVICE, requires_grad=True)
    b = torch.randn(4, device=TRITON_DEVICE, requires_grad=True)
    y = ak.conv2d_relu(x, w, b, backend="triton")
    assert y.shape == (0, 4, 7, 7)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def _backward_inputs(seed: int, channels_last: bool = False):
    x = random_tensor((3, 6, 11, 10), torch.float32, seed, channels_last).to(TRITON_DEVICE)
    w = random_tensor((8, 3, 3, 3), torch.float32, seed + 1).to(TRITON_DEVICE)
    b = random_tensor((8,), torch.float32, seed + 2).to(TRITON_DEVICE)
    arguments = ([2, 1], [1, 0], [1, 2], 2)
    y = triton_conv2d_relu.conv2d_relu(x, w, b, *arguments)
    grad_y = random_tensor(tuple(y.shape), torch.float32, seed + 3).to(TRITON_DEVICE)
    return (grad_y, x, w, y, *arguments)


def test_only_requested_gradients_are_computed() -> None:
    inputs = _backward_inputs(seed=50)
    everything = triton_conv2d_relu.conv2d_relu_backward(*inputs, [True, True, True])
    for mask in ([True, False, False], [False, True, False], [False, False, True],
                 [False, True, True]):
        grads = triton_conv2d_relu.conv2d_relu_backward(*inputs, mask)
        for wanted, grad, full in zip(mask, grads, everything, strict=True):
            if wanted:
                torch.testing.assert_close(grad, full, rtol=0, atol=0)
            else:
                assert grad.numel() == 0


def test_split_k_weight_gradient_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """grad_w summed over several K splits (fp32 workspace, then an ordered sum) equals the
    float64 reference and is bit-identical from run to run."""
    monkeypatch.setattr(triton_conv2d_relu, "_MIN_SPLIT_K", 16)
    # Splits of 32 output pixels, each ending inside a K step.
    monkeypatch.setattr(triton_conv2d_relu, "_SPLIT_ALIGN", 16)
    inputs = _backward_inputs(seed=60, channels_last=True)
    geometry = triton_conv2d_relu._Geometry.of(*inputs[1:3], *inputs[4:8])
    assert geometry.split_k(1, 1) == (4, 32)  # 108 output pixels
    first = triton_conv2d_relu.conv2d_relu_backward(*inputs, [False, True, True])
    again = triton_conv2d_relu.conv2d_relu_backward(*inputs, [False, True, True])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    grad_y, x, w, y, stride, padding, dilation, groups = inputs
    x64, w64 = (t.detach().cpu().double().requires_grad_() for t in (x, w))
    b64 = torch.zeros(w.shape[0], dtype=torch.float64, requires_grad=True)
    pre64 = F.conv2d(x64, w64, b64, stride, padding, dilation, groups)
    pre64.backward(grad_y.cpu().double() * (y.cpu() > 0))
    assert_close_to_reference(first[1].cpu(), w64.grad)
    assert_close_to_reference(first[2].cpu(), b64.grad)


def test_64_bit_indexing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The INT64 variant, taken from 2^31 elements, on tensors small enough to test."""
    monkeypatch.setattr(triton_conv2d_relu, "_INT32_LIMIT", 0)
    x_shape, w_shape, stride, padding, dilation, groups = ODD_CASES[2]
    for channels_last in (False, True):
        check_against_reference("triton", (2, *x_shape), w_shape, stride, padding, dilation,
                                groups, torch.float16, seed=65, channels_last=channels_last)


def test_dot_precision_follows_cudnn_allow_tf32() -> None:
    """fp32 convolutions use TF32 exactly when PyTorch's would (cudnn.allow_tf32)."""
    for allow, expected in ((True, "tf32"), (False, "ieee")):
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=allow):
            assert triton_conv2d_relu.dot_precision(torch.float32) == expected
            assert triton_conv2d_relu.dot_precision(torch.bfloat16) == "ieee"


def test_tf32_on_gpu() -> None:
    if TRITON_DEVICE != "cuda":
        pytest.skip("TF32 needs a GPU: the interpreter computes tl.dot in full fp32")
    x = random_tensor((2, 64, 13, 13), torch.float32, seed=70)
    w = random_tensor((96, 64, 3, 3), torch.float32, seed=71) / 24.0
    expected = F.relu(F.conv2d(x.double(), w.double(), padding=1))
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        y = ak.conv2d_relu(x.cuda(), w.cuda(), padding=1, backend="triton").cpu()
    # TF32 keeps 10 mantissa bits, as fp16 does.
    rtol, _ = ak.reference.TOLERANCES[torch.float16]
    scale = expected.abs().max().item()
    torch.testing.assert_close(y.double(), expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
def test_matches_native_cpu(dtype: torch.dtype) -> None:
    require_native_cpu()
    x = random_tensor((2, 6, 10, 9), dtype, seed=80, channels_last=True)
    w = random_tensor((10, 3, 3, 2), dtype, seed=81) / 4.0
    b = random_tensor((10,), dtype, seed=82)
    arguments = ([1, 2], [1, 1], [1, 1], 2)
    y_cpu = torch.ops.alexnet_kernels.conv2d_relu(x, w, b, *arguments)
    y = triton_conv2d_relu.conv2d_relu(*(t.to(TRITON_DEVICE) for t in (x, w, b)), *arguments)
    assert y.stride() == y_cpu.stride()
    assert_close_to_reference(y.cpu(), y_cpu.double())
    grad_y = random_tensor(tuple(y.shape), dtype, seed=83, channels_last=True)
    grads_cpu = torch.ops.alexnet_kernels.conv2d_relu_backward(grad_y, x, w, y_cpu, *arguments,
                                                               [True, True, True])
    # Both from the CPU kernel's y, so both apply the same ReLU mask.
    grads = triton_conv2d_relu.conv2d_relu_backward(
        *(t.to(TRITON_DEVICE) for t in (grad_y, x, w, y_cpu)), *arguments, [True, True, True])
    for grad, grad_cpu in zip(grads, grads_cpu, strict=True):
        assert grad.shape == grad_cpu.shape
        assert_close_to_reference(grad.cpu(), grad_cpu.double())


def test_float64_is_rejected() -> None:
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=TRITON_DEVICE)
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64, device=TRITON_DEVICE)
    with pytest.raises(TypeError, match="supports float32, float16 and bfloat16"):
        ak.conv2d_relu(x, w, backend="triton")


def test_opcheck() -> None:
    """Schema and autograd registration of both ops; the fake-tensor and AOT-dispatch
    checks on a GPU only: the interpreter reads the storage of the tensors it is given,
    which fake tensors do not have."""
    checks = ("test_schema", "test_autograd_registration")
    if TRITON_DEVICE == "cuda":
        checks += ("test_faketensor", "test_aot_dispatch_dynamic")
    grad_y, x, w, y, *arguments = _backward_inputs(seed=90)
    b = random_tensor((w.shape[0],), torch.float32, seed=91).to(TRITON_DEVICE)
    ops = torch.ops.alexnet_kernels
    torch.library.opcheck(ops.conv2d_relu_triton.default,
                          (x.clone().requires_grad_(), w.clone().requires_grad_(),
                           b.requires_grad_(), *arguments), test_utils=checks)
    torch.library.opcheck(ops.conv2d_relu_backward_triton.default,
                          (grad_y, x, w, y, *arguments, [True, True, True]), test_utils=checks)


def test_torch_compile_fullgraph_on_gpu() -> None:
    if TRITON_DEVICE != "cuda":
        pytest.skip("torch.compile of a triton_op needs a GPU (the interpreter cannot run "
                    "kernels on fake tensors)")
    torch.manual_seed(0)
    model = torch.nn.Sequential(ak.nn.Conv2dReLU(3, 8, 3, padding=1, backend="triton"),
                                ak.nn.Conv2dReLU(8, 4, 3, stride=2, backend="triton")).cuda()
    assert_compiled_matches_eager(model, random_tensor((2, 3, 11, 11), torch.float32,
                                                       seed=92).cuda())
