"""Fused conv2d + bias + ReLU against F.relu(F.conv2d) computed in float64."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from cases.conv2d_relu import (
    ODD_CASES,
    as_pair,
    assert_close_scaled,
    check_against_reference,
    forward_backward,
)
from helpers import (
    FLOAT_DTYPES,
    assert_compiled_matches_eager,
    emulated_ops,
    placement,
    random_tensor,
    require_native_cpu,
    require_native_cuda,
)

import alexnet_kernels as ak
from alexnet_kernels import backends
from alexnet_kernels.nn import Conv2dReLU

# (input (C, H, W), weight (Cout, Cin / groups, KH, KW), stride, padding, groups):
# every convolution of torchvision's AlexNet and of the paper's (grouped) one.
ALEXNET_LAYERS = {
    "torchvision-conv1": ((3, 224, 224), (64, 3, 11, 11), 4, 2, 1),
    "torchvision-conv2": ((64, 27, 27), (192, 64, 5, 5), 1, 2, 1),
    "torchvision-conv3": ((192, 13, 13), (384, 192, 3, 3), 1, 1, 1),
    "torchvision-conv4": ((384, 13, 13), (256, 384, 3, 3), 1, 1, 1),
    "torchvision-conv5": ((256, 13, 13), (256, 256, 3, 3), 1, 1, 1),
    "paper-conv1": ((3, 227, 227), (96, 3, 11, 11), 4, 0, 1),
    "paper-conv2-grouped": ((96, 27, 27), (256, 48, 5, 5), 1, 2, 2),
    "paper-conv3": ((256, 13, 13), (384, 256, 3, 3), 1, 1, 1),
    "paper-conv4-grouped": ((384, 13, 13), (384, 192, 3, 3), 1, 1, 2),
    "paper-conv5-grouped": ((384, 13, 13), (256, 192, 3, 3), 1, 1, 2),
}

# Downsized versions of AlexNet's convolutions and further odd cases for the
# CUDA kernels run on the CPU by the emulator (input (C, H, W), weight,
# stride, padding, dilation, groups): conv1's 11x11 / stride 4 / pad 2 with
# K = 3 * 121 spanning many K tiles, a grouped 5x5, a 3x3 with Cout = 70 (two
# N tiles, the second partial), stride larger than the kernel (stride phases
# no tap reaches), a non-square stride and kernel with padding (uneven phases),
# stride 3 with dilation 2 (each phase's one tap sits at a different kernel row).
EMULATED_CASES = [
    ((3, 15, 15), (5, 3, 11, 11), 4, 2, 1, 1),
    ((6, 7, 7), (8, 3, 5, 5), 1, 2, 1, 2),
    ((8, 5, 6), (70, 8, 3, 3), 1, 1, 1, 1),
    ((4, 13, 11), (6, 4, 2, 2), 5, 1, 1, 1),
    ((5, 10, 9), (6, 5, 3, 4), (2, 3), (1, 2), 1, 1),
    ((3, 11, 12), (4, 3, 3, 3), 3, 2, 2, 1),
]

PROVIDERS = ["native", "torch", "native_cuda"]


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 at fp32's tolerance: TF32 off (PyTorch's default allows it for convolutions,
    and the CUDA kernels follow that setting); the TF32 tests below turn it on."""
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        yield


def forward(provider: str, leaves: list[torch.Tensor], stride, padding, dilation,
            groups) -> torch.Tensor:
    """y alone (no gradients) of one implementation, on CPU tensors; see forward_backward."""
    bias = leaves[2] if len(leaves) == 3 else None
    if provider == "emulated_cuda":
        return emulated_ops().conv2d_relu(leaves[0], leaves[1], bias, as_pair(stride),
                                           as_pair(padding), as_pair(dilation), groups)
    where = placement(provider)
    with where.context, torch.no_grad():
        y = ak.conv2d_relu(leaves[0].to(where.device), leaves[1].to(where.device),
                           None if bias is None else bias.to(where.device), stride, padding,
                           dilation, groups, backend=where.backend)
    return y.cpu()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layer", list(ALEXNET_LAYERS))
def test_alexnet_layers(provider: str, layer: str) -> None:
    x_shape, w_shape, stride, padding, groups = ALEXNET_LAYERS[layer]
    check_against_reference(provider, (2, *x_shape), w_shape, stride, padding, 1, groups,
                            torch.float32, seed=1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(ODD_CASES)))
def test_odd_shapes(dtype: torch.dtype, case: int) -> None:
    x_shape, w_shape, stride, padding, dilation, groups = ODD_CASES[case]
    for batch, channels_last in ((1, False), (3, True)):
        check_against_reference("native", (batch, *x_shape), w_shape, stride, padding, dilation,
                                groups, dtype, seed=10 + case, channels_last=channels_last)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(ODD_CASES)))
def test_odd_shapes_emulated_cuda(dtype: torch.dtype, case: int) -> None:
    x_shape, w_shape, stride, padding, dilation, groups = ODD_CASES[case]
    channels_last = case % 2 == 1  # both layouts for every dtype, half the cost
    check_against_reference("emulated_cuda", (1 + case % 2, *x_shape), w_shape, stride, padding,
                            dilation, groups, dtype, seed=40 + case, channels_last=channels_last)


# Both layouts for the FFMA path; one each for the (slower to emulate) tensor-core path.
EMULATED_FORMATS = [(torch.float32, False), (torch.float32, True), (torch.float16, False),
                    (torch.bfloat16, True)]


@pytest.mark.parametrize("dtype,channels_last", EMULATED_FORMATS,
                         ids=["float32-nchw", "float32-nhwc", "float16-nchw", "bfloat16-nhwc"])
@pytest.mark.parametrize("case", range(len(EMULATED_CASES)))
def test_downsized_alexnet_emulated_cuda(dtype: torch.dtype, channels_last: bool,
                                         case: int) -> None:
    x_shape, w_shape, stride, padding, dilation, groups = EMULATED_CASES[case]
    batch = 1 if case == 0 else 2  # conv1's data gradient is the costliest to emulate
    check_against_reference("emulated_cuda", (batch, *x_shape), w_shape, stride, padding,
                            dilation, groups, dtype, seed=50 + case, channels_last=channels_last)


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """fp32 values rounded to TF32 (10 mantissa bits), to nearest with ties away from zero,
    as cvt.rna.tf32.f32 does; inf and NaN unchanged."""
    bits = t.float().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = torch.where(finite, (bits + 0x1000) & 0xFFFFE000, bits)
    signed = torch.where(rounded >= 2**31, rounded - 2**32, rounded)
    return signed.to(torch.int32).view(torch.float32)


# The pipelined forward (NHWC, fp16 / bf16, (C_in / groups) % 8 == 0; input, weight,
# stride, padding, dilation, groups, batch) at its edges. K = KH * KW * C_in / groups
# against the 32-deep K tile, C_out / groups against the 128-wide N tile, the output
# pixels against the 128-high M tile.
PIPELINE_CASES = {
    # K = 72: two whole K tiles and a partial one; C_in = 8: 4 taps per K tile.
    "k-tail-cin8": ((8, 7, 9), (12, 8, 3, 3), 1, 1, 1, 1, 2),
    # K = 16: a single K step, shorter than the tile (the prologue's second group is empty).
    "one-k-step": ((16, 5, 5), (20, 16, 1, 1), 1, 0, 1, 1, 1),
    # C_in = 24 does not divide the K tile: chunks meet new taps at every step; a 3 x 1
    # kernel; C_out 130: a second, nearly empty N tile; stride 2 over odd sizes.
    "cin24-cout130-strided": ((24, 11, 9), (130, 24, 3, 1), 2, 1, 1, 1, 1),
    # groups (C_in / groups = 16), dilation 2, odd C_out / groups (single-element stores);
    # K = 144: 5 K steps, so the 3-stage ring wraps.
    "grouped-dilated-odd-cout": ((32, 9, 10), (18, 16, 3, 3), 1, 2, 2, 2, 1),
    # 3 images x 90 pixels: three M tiles, the last partial (1 x 1: K = 32, one whole tile).
    "m-tiles": ((32, 9, 10), (40, 32, 1, 1), 1, 0, 1, 1, 3),
}


def _forward_kernels(ops, call: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
    """call()'s output and the names of the kernels it launched (the emulator's counters
    name every launch; with no sampling every block runs)."""
    ops.counters_begin(0)
    try:
        y = call()
    finally:
        launches = json.loads(ops.counters_end())["launches"]
    return y, [launch["kernel"] for launch in launches]


def _pipelined_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride,
                       padding, dilation, groups: int) -> tuple[torch.Tensor, list[str]]:
    ops = emulated_ops()
    return _forward_kernels(ops, lambda: ops.conv2d_relu(
        x, w, b, as_pair(stride), as_pair(padding), as_pair(dilation), groups))


@pytest.mark.parametrize("case", list(PIPELINE_CASES))
def test_pipelined_forward_edges_emulated_cuda(case: str) -> None:
    x_shape, w_shape, stride, padding, dilation, groups, batch = PIPELINE_CASES[case]
    dtype = torch.bfloat16 if list(PIPELINE_CASES).index(case) % 2 == 0 else torch.float16
    seed = 120 + list(PIPELINE_CASES).index(case)
    x = random_tensor((batch, *x_shape), dtype, seed, channels_last=True)
    w = random_tensor(w_shape, dtype, seed + 1) / (w_shape[1] * w_shape[2] * w_shape[3]) ** 0.5
    b = random_tensor((w_shape[0],), dtype, seed + 2)
    y, kernels = _pipelined_forward(x, w, b, stride, padding, dilation, groups)
    assert [k for k in kernels if "forward" in k] == [
        f"void alexnet_kernels::kernels::conv2d_relu_forward_nhwc_kernel<{_KERNEL_TYPE[dtype]}>"
        f"(alexnet_kernels::kernels::ConvForwardArgs<{_KERNEL_TYPE[dtype]}>)"], kernels
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert_close_scaled(y, F.relu(F.conv2d(x.double(), w.double(), b.double(), stride, padding,
                                           dilation, groups)))


_KERNEL_TYPE = {torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}


def test_pipelined_forward_keeps_nan_and_skips_empty_batches_emulated_cuda() -> None:
    """NaN semantics of F.relu(F.conv2d(...)) (a NaN pre-activation stays NaN, an inf
    weight tap makes +-inf or NaN), and batch 0 launches nothing."""
    x = random_tensor((2, 8, 6, 7), torch.float64, seed=130)
    x[0, 1, 2, 3] = math.nan
    w = random_tensor((10, 8, 3, 3), torch.float64, seed=131) / 8
    w[2, 5, 1, 1] = math.inf
    b = random_tensor((10,), torch.float64, seed=132)
    x, w, b = (t.to(torch.bfloat16) for t in (x, w, b))
    x = x.contiguous(memory_format=torch.channels_last)
    y, kernels = _pipelined_forward(x, w, b, 1, 1, 1, 1)
    assert any("forward_nhwc" in k for k in kernels), kernels
    y64 = F.relu(F.conv2d(x.double(), w.double(), b.double(), 1, 1))
    assert y64.isnan().any() and y64.isinf().any()
    assert torch.equal(y.isnan(), y64.isnan()) and torch.equal(y.isinf(), y64.isinf())
    empty, kernels = _pipelined_forward(x[:0], w, b, 1, 1, 1, 1)
    assert empty.shape == (0, 10, 6, 7) and kernels == []


@pytest.mark.parametrize("case", ["cin4", "nchw", "unaligned", "float32"])
def test_forward_outside_the_pipeline_takes_the_other_kernel_emulated_cuda(case: str) -> None:
    """C_in / groups not a multiple of 8, NCHW, an x view 2 bytes off 16-byte alignment
    and fp32 run conv2d_relu_forward_kernel, with the right result."""
    channels = 4 if case == "cin4" else 8
    dtype = torch.float32 if case == "float32" else torch.bfloat16
    x = random_tensor((1, channels, 5, 6), dtype, seed=140, channels_last=case != "nchw")
    if case == "unaligned":
        flat = torch.empty(x.numel() + 1, dtype=dtype)
        x = flat[1:].view(1, 5, 6, channels).permute(0, 3, 1, 2)  # NHWC strides, offset 1
        x.copy_(random_tensor((1, channels, 5, 6), dtype, seed=140))
        assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 != 0
    w = random_tensor((6, channels, 3, 3), dtype, seed=141) / 6
    y, kernels = _pipelined_forward(x, w, None, 1, 1, 1, 1)
    assert len(kernels) == 1 and "conv2d_relu_forward_kernel<" in kernels[0], kernels
    assert_close_scaled(y, F.relu(F.conv2d(x.double(), w.double(), None, 1, 1)))


def test_round_to_tf32_rounds_to_ten_mantissa_bits() -> None:
    ulp = 2.0**-10  # of TF32 at 1.0
    largest = torch.finfo(torch.float32).max  # rounds past fp32's range: inf
    x = torch.tensor([1.0, 1 + ulp / 2, 1 + ulp / 2 - 2.0**-23, 1 + 1.5 * ulp, -(1 + ulp / 2),
                      largest, -float("inf")])
    expected = torch.tensor([1.0, 1 + ulp, 1.0, 1 + 2 * ulp, -(1 + ulp), float("inf"),
                             -float("inf")])
    assert torch.equal(round_to_tf32(x), expected)
    assert round_to_tf32(torch.tensor([float("nan")])).isnan().all()


def check_tf32_against_rounded_operands(provider: str, x_shape, w_shape, stride, padding,
                                        groups, seed: int, channels_last: bool) -> None:
    """With TF32 allowed, fp32 results equal the float64 convolution of the operands rounded
    to TF32 (products exact, fp32 sums) at fp32's tolerance; the full-fp32 result misses it."""
    x = random_tensor(x_shape, torch.float32, seed, channels_last)
    fan_in = w_shape[1] * w_shape[2] * w_shape[3]
    w = random_tensor(w_shape, torch.float32, seed + 1) / fan_in**0.5
    b = random_tensor((w_shape[0],), torch.float32, seed + 2)
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=True):
        y, grad_y, (grad_x, grad_w, grad_b) = forward_backward(
            provider, [x, w, b], stride, padding, 1, groups, seed)
    full_y = forward(provider, [x, w, b], stride, padding, 1, groups)
    masked = (grad_y * (y > 0)).double()
    x64, w64 = round_to_tf32(x).double(), round_to_tf32(w).double()
    assert_close_scaled(y, F.relu(F.conv2d(x64, w64, b.double(), stride, padding, 1, groups)))
    assert not torch.equal(y, full_y), "allow_tf32 changed nothing: no TF32 path ran"
    g64 = round_to_tf32(masked.float()).double()
    grad_input = torch.nn.grad.conv2d_input(x.shape, w64, g64, stride, padding, 1, groups)
    grad_weight = torch.nn.grad.conv2d_weight(x64, w.shape, g64, stride, padding, 1, groups)
    assert_close_scaled(grad_x, grad_input)
    assert_close_scaled(grad_w, grad_weight)
    assert_close_scaled(grad_b, masked.sum((0, 2, 3)))  # a plain fp32 reduction, no GEMM


@pytest.mark.parametrize("case,channels_last", [(0, False), (2, True)], ids=["conv1-nchw",
                                                                             "cout70-nhwc"])
def test_tf32_emulated_cuda(case: int, channels_last: bool) -> None:
    x_shape, w_shape, stride, padding, _, groups = EMULATED_CASES[case]
    check_tf32_against_rounded_operands("emulated_cuda", (1, *x_shape), w_shape, stride, padding,
                                        groups, seed=90 + case, channels_last=channels_last)


def test_tf32_native_cuda() -> None:
    require_native_cuda()
    x_shape, w_shape, stride, padding, groups = ALEXNET_LAYERS["paper-conv2-grouped"]
    check_tf32_against_rounded_operands("native_cuda", (2, *x_shape), w_shape, stride, padding,
                                        groups, seed=95, channels_last=False)


def test_requested_gradients_and_empty_batch_emulated_cuda() -> None:
    ops = emulated_ops()
    arguments = ([1, 1], [1, 1], [1, 1], 1)
    x = random_tensor((2, 3, 6, 5), torch.float32, seed=60)
    w = random_tensor((4, 3, 3, 3), torch.float32, seed=61)
    check_against_reference("emulated_cuda", (2, 4, 9, 9), (6, 4, 3, 3), 1, 1, 1, 1,
                            torch.float64, seed=62, bias=False)
    y = ops.conv2d_relu(x, w, None, *arguments)
    grad_y = random_tensor(tuple(y.shape), torch.float32, seed=63)
    grad_x, grad_w, grad_b = ops.conv2d_relu_backward(grad_y, x, w, y, *arguments,
                                                      [False, True, False])
    assert grad_x.numel() == 0 and grad_b.numel() == 0 and grad_w.shape == w.shape
    empty = torch.empty(0, 3, 6, 5)
    y = ops.conv2d_relu(empty, w, torch.ones(4), *arguments)
    assert y.shape == (0, 4, 6, 5)
    grads = ops.conv2d_relu_backward(torch.empty_like(y), empty, w, y, *arguments,
                                     [True, True, True])
    assert grads[0].shape == empty.shape
    assert torch.equal(grads[1], torch.zeros_like(w)) and torch.equal(grads[2], torch.zeros(4))


def test_weight_gradient_is_deterministic_emulated_cuda() -> None:
    """Split-K partials are summed in slice order by a second kernel: two runs
    agree bit for bit (with atomics the order, and so the rounding, would vary)."""
    ops = emulated_ops()
    arguments = ([1, 1], [0, 0], [1, 1], 1)
    x = random_tensor((2, 2, 30, 30), torch.float32, seed=64)  # K = 2 * 28 * 28: many slices
    w = random_tensor((3, 2, 3, 3), torch.float32, seed=65)
    y = ops.conv2d_relu(x, w, None, *arguments)
    grad_y = random_tensor(tuple(y.shape), torch.float32, seed=66)
    runs = [ops.conv2d_relu_backward(grad_y, x, w, y, *arguments, [False, True, True])
            for _ in range(2)]
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    F.conv2d(x64, w64, None, 1, 0).backward(grad_y.double() * (y > 0))
    assert_close_scaled(runs[0][1], w64.grad)


def test_gradcheck_emulated_cuda() -> None:
    ops = emulated_ops()
    arguments = ([2, 1], [1, 1], [1, 1], 2)

    class EmulatedConv2dRelu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            y = ops.conv2d_relu(x, w, b, *arguments)
            ctx.save_for_backward(x, w, y)
            return y

        @staticmethod
        def backward(ctx, grad_y):
            x, w, y = ctx.saved_tensors
            return ops.conv2d_relu_backward(grad_y.contiguous(), x, w, y, *arguments,
                                            [True, True, True])

    x = random_tensor((1, 4, 4, 3), torch.float64, seed=67).requires_grad_()
    w = random_tensor((2, 2, 3, 2), torch.float64, seed=68).requires_grad_()
    b = random_tensor((2,), torch.float64, seed=69).requires_grad_()
    assert torch.autograd.gradcheck(EmulatedConv2dRelu.apply, (x, w, b))


def test_without_bias_and_unbatched() -> None:
    check_against_reference("native", (2, 4, 9, 9), (6, 4, 3, 3), 1, 1, 1, 1, torch.float64,
                            seed=20, bias=False)
    x = random_tensor((4, 9, 9), torch.float32, seed=21)
    w = random_tensor((6, 4, 3, 3), torch.float32, seed=22)
    y = ak.conv2d_relu(x, w, padding=1, backend="native")
    torch.testing.assert_close(y, F.relu(F.conv2d(x, w, padding=1)), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_string_padding(padding: str) -> None:
    require_native_cpu()
    x = random_tensor((2, 3, 10, 9), torch.float64, seed=23)
    for w_shape, dilation in (((4, 3, 3, 3), 1), ((4, 3, 4, 2), (2, 1))):  # odd and even kernels
        w = random_tensor(w_shape, torch.float64, seed=24)
        torch.testing.assert_close(
            ak.conv2d_relu(x, w, padding=padding, dilation=dilation, backend="native"),
            F.relu(F.conv2d(x, w, padding=padding, dilation=dilation)))


def test_empty_batch() -> None:
    require_native_cpu()
    x = torch.empty(0, 3, 9, 9, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = ak.conv2d_relu(x, w, torch.randn(4), backend="native")
    assert y.shape == (0, 4, 7, 7)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


def test_only_requested_gradients_are_computed() -> None:
    require_native_cpu()
    x = random_tensor((2, 3, 8, 8), torch.float32, seed=25)  # no grad: the first layer's case
    w = random_tensor((4, 3, 3, 3), torch.float32, seed=26).requires_grad_()
    y = ak.conv2d_relu(x, w, backend="native")
    y.sum().backward()
    assert x.grad is None and w.grad is not None


def test_gradcheck() -> None:
    require_native_cpu()
    x = random_tensor((2, 4, 6, 7), torch.float64, seed=27).requires_grad_()
    w = random_tensor((6, 2, 3, 2), torch.float64, seed=28).requires_grad_()
    b = random_tensor((6,), torch.float64, seed=29).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *t: ak.conv2d_relu(*t, stride=(2, 1), padding=1, groups=2, backend="native"),
        (x, w, b))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck(channels_last: bool) -> None:
    require_native_cpu()
    ops = torch.ops.alexnet_kernels
    x = random_tensor((2, 4, 9, 8), torch.float32, seed=30, channels_last=channels_last)
    w = random_tensor((6, 2, 3, 3), torch.float32, seed=31)
    b = random_tensor((6,), torch.float32, seed=32)
    arguments = ([2, 1], [1, 1], [1, 1], 2)
    torch.library.opcheck(ops.conv2d_relu.default, (x.requires_grad_(), w.requires_grad_(),
                                                    b.requires_grad_(), *arguments))
    y = ops.conv2d_relu(x.detach(), w.detach(), b.detach(), *arguments)
    grad_y = random_tensor(tuple(y.shape), torch.float32, seed=33)
    torch.library.opcheck(ops.conv2d_relu_backward.default,
                          (grad_y, x.detach(), w.detach(), y, *arguments, [True, True, True]))


def test_torch_compile_fullgraph() -> None:
    require_native_cpu()
    torch.manual_seed(0)
    model = torch.nn.Sequential(ak.nn.Conv2dReLU(3, 8, 3, padding=1, backend="native"),
                                ak.nn.Conv2dReLU(8, 4, 3, stride=2, backend="native"))
    assert_compiled_matches_eager(model, random_tensor((2, 3, 11, 11), torch.float32, seed=34))


@pytest.mark.parametrize("provider", ["native", "torch"])
def test_autocast_runs_in_the_autocast_dtype_as_conv2d_does(provider: str) -> None:
    """Under autocast our op casts its fp32 operands as autocast casts F.conv2d's, and
    agrees with eager on them; gradients reach the fp32 leaves in fp32."""
    with placement(provider).context:
        torch.manual_seed(2)
        conv = torch.nn.Conv2d(5, 7, 3, stride=2, padding=1)
        ours = ak.nn.Conv2dReLU(5, 7, 3, stride=2, padding=1, backend=provider)
        ours.load_state_dict(conv.state_dict())
        x = random_tensor((2, 5, 9, 10), torch.float32, seed=36).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = torch.relu(conv(x))
            actual = ours(x)
        assert actual.dtype == expected.dtype == torch.bfloat16
        torch.testing.assert_close(actual, expected, rtol=1.6e-2, atol=1.6e-2)
        actual.float().sum().backward()
        assert x.grad.dtype == ours.weight.grad.dtype == torch.float32


def test_module_is_drop_in() -> None:
    torch.manual_seed(1)
    theirs = torch.nn.Conv2d(4, 6, (3, 5), stride=2, padding=(1, 2), groups=2)
    ours = ak.nn.Conv2dReLU(4, 6, (3, 5), stride=2, padding=(1, 2), groups=2)
    assert isinstance(ours, torch.nn.Conv2d)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = random_tensor((2, 4, 9, 11), torch.float32, seed=35)
    torch.testing.assert_close(ours(x), torch.relu(theirs(x)), rtol=1e-5, atol=1e-5)
    reflect = ak.nn.Conv2dReLU(4, 6, 3, padding=1, padding_mode="reflect")
    reference = torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect")
    reference.load_state_dict(reflect.state_dict())
    torch.testing.assert_close(reflect(x), torch.relu(reference(x)), rtol=1e-5, atol=1e-5)
    assert "backend='torch'" in repr(ak.nn.Conv2dReLU(3, 3, 1, backend="torch"))


def test_a_device_without_native_kernel_is_explained() -> None:
    with pytest.raises(NotImplementedError, match="no cuda kernel yet"):
        backends.resolve("native", torch.device("cuda"), "conv2d_relu", ("native", "torch"),
                         native_devices=("cpu",))
    assert backends.resolve("auto", torch.device("cuda"), "conv2d_relu", ("native", "torch"),
                            native_devices=("cpu",)) == "torch"


BAD_ARGUMENTS: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: ak.conv2d_relu(torch.randn(1, 4, 5, 5), torch.randn(2, 3, 3, 3)), ValueError,
     "weight expects 3 input channels"),
    (lambda: ak.conv2d_relu(torch.randn(1, 4, 5, 5), torch.randn(3, 2, 3, 3), groups=2),
     ValueError, "must divide"),
    (lambda: ak.conv2d_relu(torch.randn(1, 3, 2, 2), torch.randn(2, 3, 3, 3)), ValueError,
     "smaller than the \\(dilated\\) kernel"),
    (lambda: ak.conv2d_relu(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), torch.randn(3)),
     ValueError, "bias must have shape \\(2,\\)"),
    (lambda: ak.conv2d_relu(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3).double()),
     TypeError, "weight must have x's dtype"),
    (lambda: ak.conv2d_relu(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), stride=2,
                            padding="same"), ValueError, "not supported for strided"),
    (lambda: ak.conv2d_relu(torch.randn(3, 5), torch.randn(2, 3, 3, 3)), ValueError, "3-D"),
    (lambda: ak.conv2d_relu(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), stride=0),
     ValueError, "must be positive"),
]


@pytest.mark.parametrize("call,error,message", BAD_ARGUMENTS)
def test_bad_arguments(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_bad_arguments_reach_the_kernels_checks() -> None:
    require_native_cpu()
    op = torch.ops.alexnet_kernels.conv2d_relu
    ok = ([1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="weight expects 3 input channels"):
        op(torch.randn(1, 4, 5, 5), torch.randn(2, 3, 3, 3), None, *ok)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        op(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), torch.randn(4), *ok)
    with pytest.raises(RuntimeError, match="weight must have x's dtype"):
        op(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3).double(), None, *ok)
    with pytest.raises(RuntimeError, match="smaller than the \\(dilated\\) kernel"):
        op(torch.randn(1, 3, 2, 2), torch.randn(2, 3, 3, 3), None, *ok)


# ---- regressions found by the fuzz tests (tests/test_fuzz_conv2d_relu.py) -----------

@contextlib.contextmanager
def _onednn_fusion(enabled: bool):
    from alexnet_kernels import _extension

    require_native_cpu()
    previous = _extension.onednn_fusion() == "fused"
    _extension.set_onednn_fusion(enabled)
    try:
        yield
    finally:
        _extension.set_onednn_fusion(previous)


def _non_finite_case(dtype: torch.dtype) -> list[torch.Tensor]:
    """x with a NaN and an inf, a weight with an inf at its centre tap (inside the input
    for every window, so no zero padding multiplies it)."""
    x = random_tensor((2, 3, 6, 7), torch.float64, seed=90)
    x[0, 1, 2, 3] = math.nan
    x[1, 0, 4, 1] = math.inf
    w = random_tensor((4, 3, 3, 3), torch.float64, seed=91) / 5
    w[2, 1, 1, 1] = math.inf
    return [x.to(dtype), w.to(dtype), random_tensor((4,), dtype, seed=92)]


@pytest.mark.parametrize("provider", ["native", "native_unfused", "emulated_cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_regression_nan_survives_the_relu_and_passes_its_gradient(provider: str,
                                                                  dtype: torch.dtype) -> None:
    """NaN semantics of F.relu(F.conv2d(...)): a NaN pre-activation stays NaN (oneDNN's
    fused ReLU post-op made it 0 on the CPU), and the backward lets a NaN output's
    gradient through, as threshold_backward does (the masks tested y > 0)."""
    leaves = _non_finite_case(dtype)
    arguments = (1, 1, 1, 1)  # stride, padding, dilation, groups
    context = _onednn_fusion(False) if provider == "native_unfused" else contextlib.nullcontext()
    with context:
        y, grad_y, grads = forward_backward(
            "native" if provider == "native_unfused" else provider, leaves, *arguments, seed=93)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    y64 = F.relu(F.conv2d(leaves64[0], leaves64[1], leaves64[2], *arguments))
    assert y64.isnan().any() and y64.isinf().any()
    assert torch.equal(y.isnan(), y64.isnan()) and torch.equal(y.isinf(), y64.isinf())
    y64.backward(grad_y.double())
    for ours, reference in zip(grads, leaves64, strict=True):
        assert torch.equal(ours.isnan(), reference.grad.isnan())
        finite = reference.grad.isfinite()
        assert_close_scaled(ours[finite], reference.grad[finite])


def test_regression_overflowing_products_keep_their_nan() -> None:
    """Finite operands whose float32 products overflow with both signs (+inf - inf: NaN
    in any summation order) also take the unfused path: same NaNs as eager float32."""
    require_native_cpu()
    x = random_tensor((1, 2, 5, 5), torch.float32, seed=97)
    x[0, :, 1:3, 1:3] = 1e30
    w = random_tensor((3, 2, 3, 3), torch.float32, seed=98)
    w[1, :, 1, 1] = torch.tensor([1e30, -1e30])
    y = ak.conv2d_relu(x, w, None, 1, 1, backend="native")
    expected = F.relu(F.conv2d(x, w, None, 1, 1))
    assert expected.isnan().any()
    assert torch.equal(y.isnan(), expected.isnan())


def test_regression_the_unfused_cpu_path_equals_the_fused_one() -> None:
    """With oneDNN's fusion forbidden (the path taken when the private op's schema is not
    the expected one, or the operands could make a NaN) the results are eager's, bit for
    bit, on finite operands."""
    from alexnet_kernels import _extension

    require_native_cpu()
    assert _extension.onednn_fusion() == "fused"
    x = random_tensor((2, 3, 11, 9), torch.float32, seed=94)
    w = random_tensor((5, 3, 3, 3), torch.float32, seed=95)
    b = random_tensor((5,), torch.float32, seed=96)
    fused = ak.conv2d_relu(x, w, b, padding=1, backend="native")
    with _onednn_fusion(False):
        assert _extension.onednn_fusion() == "disabled"
        unfused = ak.conv2d_relu(x, w, b, padding=1, backend="native")
    assert _extension.onednn_fusion() == "fused"
    expected = F.relu(F.conv2d(x, w, b, padding=1))
    assert torch.equal(unfused, expected) and torch.equal(fused, expected)


@pytest.mark.parametrize("provider", ["native", "emulated_cuda"])
def test_regression_raw_op_refuses_a_window_that_does_not_fit(provider: str) -> None:
    """(4 - 5) // 2 + 1 is 1 with a truncating division: the registered op accepted a
    kernel wider than its input at stride 2 and computed an output from outside it."""
    require_native_cpu()
    op = (emulated_ops() if provider == "emulated_cuda" else torch.ops.alexnet_kernels)
    with pytest.raises(RuntimeError, match="smaller than the \\(dilated\\) kernel"):
        op.conv2d_relu(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 5, 5), None, [2, 2], [0, 0],
                       [1, 1], 1)


_PADDING_ONLY_WINDOW = """
import torch, torch.nn.functional as F
import alexnet_kernels as ak
x = torch.randn(1, 3, 5, 1).contiguous(memory_format=torch.channels_last)
w, b = torch.randn(6, 1, 1, 1), torch.randn(6)
arguments = ((2, 2), (1, 1), (1, 2), 3)  # stride, padding, dilation, groups
y = ak.conv2d_relu(x, w, b, *arguments, backend="native")
expected = F.relu(F.conv2d(x.double(), w.double(), b.double(), *arguments))
torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-6)
assert y.is_contiguous(memory_format=torch.channels_last)
print("ok")
"""


def test_regression_a_window_of_padding_only_does_not_crash() -> None:
    """oneDNN's convolution (F.conv2d's too) segfaulted on this channels_last grouped
    call, whose outputs include windows of padding only; ours pads x for it. Run in a
    child process, so that a crash fails this test instead of ending the suite."""
    require_native_cpu()
    result = subprocess.run([sys.executable, "-c", _PADDING_ONLY_WINDOW], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_regression_a_strided_bias_is_read_by_its_strides() -> None:
    """oneDNN's fused op reads its bias as if it were contiguous: a bias sliced with a
    step gave the wrong per-channel offsets."""
    require_native_cpu()
    x = random_tensor((2, 3, 6, 5), torch.float32, seed=99)
    w = random_tensor((4, 3, 3, 3), torch.float32, seed=100)
    bias = random_tensor((8,), torch.float32, seed=101)[::2]
    y = torch.ops.alexnet_kernels.conv2d_relu(x, w, bias, [1, 1], [1, 1], [1, 1], 1)
    assert torch.equal(y, F.relu(F.conv2d(x, w, bias.contiguous(), padding=1)))


def _in_place_changes() -> list[Callable[[torch.nn.Module], None]]:
    """Ways a module's weight or bias changes in place between calls, each putting a NaN
    into it."""
    def set_weight_item(conv: torch.nn.Module) -> None:
        with torch.no_grad():
            conv.weight[1, 0, 1, 1] = math.nan

    def optimizer_step(conv: torch.nn.Module) -> None:
        conv.weight.grad = torch.zeros_like(conv.weight)
        conv.weight.grad[2, 1, 1, 1] = math.nan
        torch.optim.SGD(conv.parameters(), lr=1.0).step()

    def load_state_dict(conv: torch.nn.Module) -> None:
        state = {k: v.clone() for k, v in conv.state_dict().items()}
        state["bias"][0] = math.nan
        conv.load_state_dict(state)

    return [set_weight_item, optimizer_step, load_state_dict]


@pytest.mark.parametrize("change", _in_place_changes(), ids=lambda f: f.__name__)
def test_regression_cached_weight_bounds_follow_in_place_changes(change) -> None:
    """The fusion guard remembers max|w| and max|b| per weight version instead of reading
    the weights on every call; a weight changed in place after a fused call must still
    send the next call down the unfused path, keeping eager's NaNs."""
    from alexnet_kernels import _extension

    require_native_cpu()
    assert _extension.onednn_fusion() == "fused"
    conv = Conv2dReLU(3, 4, 3, padding=1, backend="native")
    x = random_tensor((2, 3, 7, 6), torch.float32, seed=102)
    first = conv(x)  # fused: every operand finite and small
    assert torch.equal(first, F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)))
    change(conv)
    y = conv(x)
    expected = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert expected.isnan().any()
    assert torch.equal(y.isnan(), expected.isnan())
    finite = expected.isfinite()
    assert torch.equal(y[finite], expected[finite])
