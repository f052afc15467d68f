"""Max pooling: every implementation against F.max_pool2d computed in float64."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
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
    FLOAT_DTYPES,
    KERNEL_PROVIDERS,
    assert_close_to_reference,
    assert_compiled_matches_eager,
    cpu_capability,
    emulated_ops,
    native_cpu_context,
    random_tensor,
    require_native_cpu,
)

import alexnet_kernels as ak
from alexnet_kernels import _extension
from alexnet_kernels.ops.max_pool import PoolGeometry

ODD_SHAPES = [(2, 3, 7, 9), (1, 5, 13, 6), (3, 2, 8, 8)]
# AlexNet's pooling layers: 55 -> 27, 27 -> 13, 13 -> 6.
ALEXNET_SHAPES = [(2, 96, 55, 55), (2, 256, 27, 27), (2, 256, 13, 13)]

PROVIDERS = KERNEL_PROVIDERS


# ---- numerics ------------------------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
def test_windows(provider: str, window, shape) -> None:
    for seed, dtype in enumerate((torch.float32, torch.float64)):
        check_against_reference(provider, shape, dtype, window, seed=10 + seed)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("window", [ALEXNET_POOL, (3, 2, 1, 1, True), ((2, 3), 1, 1, 2, False)],
                         ids=str)
def test_dtypes_and_channels_last(provider: str, dtype: torch.dtype, window) -> None:
    check_against_reference(provider, (2, 5, 9, 11), dtype, window, seed=20)
    check_against_reference(provider, (2, 37, 9, 11), dtype, window, seed=21, channels_last=True)


@pytest.mark.parametrize("provider", ["native", "native_avx2", "native_baseline", "native_cuda"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", ALEXNET_SHAPES, ids=str)
def test_alexnet_shapes(provider: str, dtype: torch.dtype, shape) -> None:
    check_against_reference(provider, shape, dtype, ALEXNET_POOL, seed=30)
    check_against_reference(provider, shape, dtype, ALEXNET_POOL, seed=31, channels_last=True)


@pytest.mark.parametrize("shape", [(1, 8, 55, 55), (1, 32, 27, 27)], ids=str)
def test_emulated_cuda_alexnet_shapes(shape) -> None:
    check_against_reference("emulated_cuda", shape, torch.float32, ALEXNET_POOL, seed=32)
    check_against_reference("emulated_cuda", shape, torch.float32, ALEXNET_POOL, seed=33,
                            channels_last=True)


# The CUDA kernels' NCHW plans (csrc/kernels/max_pool.cuh): planes grouped per block
# (400 planes: groups of 3, the last one short), a plane split into bands of rows
# (forward 130 x 130 fp32 and its 64 x 64 grad_y / argmax exceed the 16 KiB staging
# budget), and rows too wide to stage at all (the generic kernels), with windows that
# pad, dilate and take ceil mode; channels_last takes one kernel for all of them.
STAGING_PLANS = [
    ((2, 200, 5, 5), ALEXNET_POOL, "staged"),
    ((1, 1, 130, 130), ALEXNET_POOL, "staged"),
    ((1, 1, 130, 130), ((3, 2), (2, 3), 1, (2, 1), True), "staged"),
    ((1, 2, 4, 4000), (3, 1, 1, 1, False), "generic"),
]


def _launched_pool_kernels(x: torch.Tensor, window: tuple) -> list[str]:
    """Names of the kernels one emulated forward and backward launch (2 blocks each run:
    the outputs of this call are incomplete and not used)."""
    ops = emulated_ops()
    arguments = PoolGeometry(x.shape, *window).op_arguments()
    y, argmax = ops.max_pool2d(x, *arguments)
    ops.counters_begin(2)
    try:
        ops.max_pool2d(x, *arguments)
        ops.max_pool2d_backward(torch.ones_like(y), argmax, list(x.shape), *arguments)
    finally:
        launches = json.loads(ops.counters_end())["launches"]
    return [launch["kernel"] for launch in launches]


@pytest.mark.parametrize(("shape", "window", "plan"), STAGING_PLANS, ids=str)
def test_emulated_cuda_staging_plans(shape, window, plan: str) -> None:
    check_against_reference("emulated_cuda", shape, torch.float32, window, seed=34)
    check_against_reference("emulated_cuda", shape, torch.bfloat16, window, seed=35,
                            channels_last=True)
    kernels = _launched_pool_kernels(torch.randn(shape), window)
    staged = [name for name in kernels if "_staged_kernel" in name]
    assert len(kernels) == 2 and len(staged) == (2 if plan == "staged" else 0), kernels


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("window", [ALEXNET_POOL, (3, 1, 1, 1, False), (2, 2, 1, 2, True)],
                         ids=str)
def test_nan_inf_and_ties_follow_pytorch(provider: str, channels_last: bool, window) -> None:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = ties_nan_and_inf((2, 6, 11, 10), seed=40, channels_last=channels_last).to(dtype)
        grad_y = random_tensor(output_shape(x, window), dtype, 41, channels_last)
        y, indices, grad_x = forward_backward(provider, x, grad_y, window)
        y_ref, indices_ref, grad_ref = reference(x, grad_y, window)
        torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(indices, indices_ref, rtol=0, atol=0)
        assert_close_to_reference(grad_x, grad_ref)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_large_window_uses_int32_argmax(provider: str) -> None:
    window = ((17, 16), (3, 5), (8, 2), 1, True)  # 272 positions: more than a byte holds
    assert PoolGeometry((1, 1, 20, 20), *window).argmax_dtype == torch.int32
    check_against_reference(provider, (2, 3, 20, 21), torch.float32, window, seed=50)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_contiguous_input(provider: str) -> None:
    x = random_tensor((5, 3, 9, 8), torch.float32, seed=60).transpose(0, 1)
    grad_y = random_tensor(output_shape(x, ALEXNET_POOL), torch.float32, seed=61)
    y, _, grad_x = forward_backward(provider, x, grad_y, ALEXNET_POOL)
    y_ref, _, grad_ref = reference(x, grad_y, ALEXNET_POOL)
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=0)
    assert_close_to_reference(grad_x, grad_ref)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_empty_batch(provider: str, channels_last: bool) -> None:
    x = torch.empty(0, 4, 9, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y, indices, grad_x = forward_backward(provider, x, torch.empty(0, 4, 4, 4), ALEXNET_POOL)
    assert y.shape == indices.shape == (0, 4, 4, 4) and grad_x.shape == x.shape


def test_unbatched_input_and_defaults() -> None:
    require_native_cpu()
    x = random_tensor((4, 10, 9), torch.float32, seed=70)
    for backend in ("native", "torch"):
        y, indices = ak.max_pool2d(x, 3, return_indices=True, backend=backend)
        y_ref, indices_ref = F.max_pool2d(x, 3, return_indices=True)
        assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref)
    assert torch.equal(ak.max_pool2d(x, [3], [2]), F.max_pool2d(x, [3], [2]))
    assert torch.equal(ak.max_pool2d(x, 2, stride=[]), F.max_pool2d(x, 2, stride=[]))


# ---- regressions found by the fuzz tests (tests/test_fuzz_max_pool.py) -------------

# A stride wider than the padded row (input columns some stride phase never
# reaches): the CPU kernel counted one entry of such a phase inside the row (a
# truncating division of a negative number), so the forward read and the
# backward wrote past the row — wrong values and heap corruption. The issue's
# dilation + ceil_mode class is this one: windows the ceil mode adds start past
# the row, and with dilation a window can also hold no input element at all
# (PyTorch then gives -inf and the window's first in-input position).
PHASE_PAST_ROW_WINDOWS = [
    ((1, 1), (1, 3), 0, 1, False),           # W=1: phases 1 and 2 hold no column
    ((3, 2), (2, 4), (1, 0), (2, 1), True),  # the dilation + ceil_mode case
    ((2, 3), (2, 3), 1, 2, True),            # a window with no element inside the input
    ((4, 4), (3, 3), (2, 1), (2, 1), True),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("window", PHASE_PAST_ROW_WINDOWS, ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 2, 1), (1, 2, 5, 2), (2, 1, 3, 4)], ids=str)
def test_regression_stride_phase_past_the_row_end(provider: str, window, shape) -> None:
    for dtype in (torch.float32, torch.float16):
        # Several rows and planes: an access past a row's end lands in a neighbour's
        # data, where it shows as a wrong value, not only as memory corruption.
        check_against_reference(provider, shape, dtype, window, seed=80)
        if shape[3] > 1:  # else x is contiguous as well and its layout is not kept
            check_against_reference(provider, shape, dtype, window, seed=81,
                                    channels_last=True)


@pytest.mark.parametrize("provider", ["native", "emulated_cuda"])
def test_regression_raw_op_takes_aten_pairs(provider: str) -> None:
    """The registered op takes its pairs as ATen's pooling does: one element for both
    axes, an empty stride for the kernel size (it refused one element before)."""
    require_native_cpu()
    ops = emulated_ops() if provider == "emulated_cuda" else torch.ops.alexnet_kernels
    x = random_tensor((2, 3, 9, 8), torch.float32, seed=82)
    y, argmax = ops.max_pool2d(x, [3], [], [1], [2], False)
    y_pairs, argmax_pairs = ops.max_pool2d(x, [3, 3], [3, 3], [1, 1], [2, 2], False)
    assert torch.equal(y, y_pairs) and torch.equal(argmax, argmax_pairs)
    assert torch.equal(y, F.max_pool2d(x, 3, padding=1, dilation=2))
    with pytest.raises(RuntimeError, match="max_pool2d: kernel_size must have one or two"):
        ops.max_pool2d(x, [3, 3, 3], [1], [0], [1], False)
    with pytest.raises(RuntimeError, match="max_pool2d: padding must have one or two"):
        ops.max_pool2d(x, [3], [1], [], [1], False)


# ---- the values-only (inference) forward ---------------------------------------

NATIVE_CPU = ["native", "native_avx2", "native_baseline"]
_VALUES_OP = "alexnet_kernels::max_pool2d_values"
_ARGMAX_OP = "alexnet_kernels::max_pool2d"


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bytes of t in logical order: equal bits, NaN payloads included."""
    return t.contiguous().view(torch.uint8)


def check_values_only(provider: str, x: torch.Tensor, window: tuple) -> None:
    """max_pool2d_values equals max_pool2d's y bit for bit, in its layout, and PyTorch's."""
    arguments = PoolGeometry(x.shape, *window).op_arguments()
    with native_cpu_context(provider):
        y = torch.ops.alexnet_kernels.max_pool2d_values(x, *arguments)
        y_with_argmax, _ = torch.ops.alexnet_kernels.max_pool2d(x, *arguments)
        with torch.no_grad():
            y_wrapper = ak.max_pool2d(x, *window, backend="native")
    assert y.dtype == x.dtype and y.stride() == y_with_argmax.stride()
    assert torch.equal(_bits(y), _bits(y_with_argmax))
    assert torch.equal(_bits(y_wrapper), _bits(y))
    y_ref = F.max_pool2d(x.double(), *window)
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("provider", NATIVE_CPU)
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_values_only_windows(provider: str, window) -> None:
    for seed, shape in enumerate(ODD_SHAPES):
        for channels_last in (False, True):
            x = random_tensor(shape, torch.float32, 100 + seed, channels_last)
            check_values_only(provider, x, window)


@pytest.mark.parametrize("provider", NATIVE_CPU)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_values_only_dtypes_and_alexnet_shapes(provider: str, dtype: torch.dtype,
                                               channels_last: bool) -> None:
    for seed, shape in enumerate([(2, 37, 9, 11), *ALEXNET_SHAPES]):
        x = random_tensor(shape, dtype, 110 + seed, channels_last)
        check_values_only(provider, x, ALEXNET_POOL)
    big_window = ((17, 16), (3, 5), (8, 2), 1, True)
    check_values_only(provider, random_tensor((2, 3, 20, 21), dtype, 119, channels_last),
                      big_window)


@pytest.mark.parametrize("provider", NATIVE_CPU)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("window", [ALEXNET_POOL, (3, 1, 1, 1, False), (2, 2, 1, 2, True)],
                         ids=str)
def test_values_only_nan_inf_and_ties(provider: str, channels_last: bool, window) -> None:
    for dtype in FLOAT_DTYPES:
        x = ties_nan_and_inf((2, 6, 11, 10), seed=120, channels_last=channels_last).to(dtype)
        check_values_only(provider, x, window)


def test_values_only_non_contiguous_and_empty_batch() -> None:
    require_native_cpu()
    x = random_tensor((5, 3, 9, 8), torch.float32, seed=130).transpose(0, 1)
    check_values_only("native", x, ALEXNET_POOL)
    for layout in (torch.contiguous_format, torch.channels_last):
        empty = torch.empty(0, 4, 9, 9).contiguous(memory_format=layout)
        y = torch.ops.alexnet_kernels.max_pool2d_values(empty, [3, 3], [2, 2], [0, 0], [1, 1],
                                                        False)
        assert y.shape == (0, 4, 4, 4)


def _custom_ops_called(fn: Callable[[], object]) -> set[str]:
    """The max-pool forward ops that fn runs, as the profiler records them."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        fn()
    return {e.name for e in profile.events()} & {_VALUES_OP, _ARGMAX_OP}


def test_values_only_op_runs_exactly_when_nothing_needs_the_argmax() -> None:
    require_native_cpu()
    x = random_tensor((2, 8, 13, 13), torch.float32, seed=140)
    leaf = x.clone().requires_grad_()

    def pool(t: torch.Tensor, **kwargs) -> Callable[[], object]:
        return lambda: ak.max_pool2d(t, 3, 2, backend="native", **kwargs)

    assert _custom_ops_called(pool(x)) == {_VALUES_OP}
    with torch.no_grad():
        assert _custom_ops_called(pool(leaf)) == {_VALUES_OP}
        assert _custom_ops_called(pool(x, return_indices=True)) == {_ARGMAX_OP}
    with torch.inference_mode():
        assert _custom_ops_called(pool(leaf)) == {_VALUES_OP}
    assert _custom_ops_called(pool(leaf)) == {_ARGMAX_OP}
    assert _custom_ops_called(pool(x, return_indices=True)) == {_ARGMAX_OP}
    y = ak.max_pool2d(leaf, 3, 2, backend="native")
    assert y.grad_fn is not None
    with torch.no_grad():
        assert torch.equal(ak.max_pool2d(leaf, 3, 2, backend="native"), y.detach())


def test_values_only_op_refuses_a_backward() -> None:
    require_native_cpu()
    x = random_tensor((1, 2, 7, 7), torch.float32, seed=70).requires_grad_()
    y = torch.ops.alexnet_kernels.max_pool2d_values(x, [3, 3], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="keeps no argmax, so it has no backward"):
        y.sum().backward()


def test_values_only_under_torch_compile_fullgraph() -> None:
    require_native_cpu()
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: ak.max_pool2d(torch.relu(t), 3, 2, backend="native"),
                             fullgraph=True)
    x = random_tensor((2, 8, 15, 15), torch.float32, seed=150)
    with torch.no_grad():
        y = compiled(x)
        assert _custom_ops_called(lambda: compiled(x)) == {_VALUES_OP}
    assert torch.equal(y, F.max_pool2d(torch.relu(x), 3, 2))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_values_only_opcheck(channels_last: bool) -> None:
    require_native_cpu()
    x = random_tensor((2, 5, 9, 8), torch.float32, seed=160, channels_last=channels_last)
    geometry = PoolGeometry(x.shape, 3, 2, 1, 1, True)
    torch.library.opcheck(torch.ops.alexnet_kernels.max_pool2d_values.default,
                          (x, *geometry.op_arguments()))


# ---- gradients, op registration, torch.compile --------------------------------

@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_gradcheck(channels_last: bool) -> None:
    require_native_cpu()
    # Distinct values keep every argmax away from a tie, where max is not differentiable.
    x = torch.randperm(2 * 3 * 7 * 8, generator=torch.Generator().manual_seed(80)).double()
    x = (x / 10).reshape(2, 3, 7, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for window in (ALEXNET_POOL, (3, 1, 1, 1, True), ((2, 3), 2, 1, (2, 1), False)):
        assert torch.autograd.gradcheck(
            lambda t, w=window: ak.max_pool2d(t, *w, backend="native"),
            (x.clone().requires_grad_(),))


def test_gradcheck_emulated_cuda() -> None:
    ops = emulated_ops()
    geometry = PoolGeometry((1, 2, 6, 7), 3, 2, 1, 1, True)

    class EmulatedMaxPool(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y, argmax = ops.max_pool2d(x, *geometry.op_arguments())
            ctx.save_for_backward(argmax)
            return y

        @staticmethod
        def backward(ctx, grad_y):
            (argmax,) = ctx.saved_tensors
            return ops.max_pool2d_backward(grad_y.contiguous(), argmax, [1, 2, 6, 7],
                                           *geometry.op_arguments())

    x = torch.randperm(84, generator=torch.Generator().manual_seed(81)).double()
    x = (x / 10).reshape(1, 2, 6, 7).requires_grad_()
    assert torch.autograd.gradcheck(EmulatedMaxPool.apply, (x,))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck(channels_last: bool) -> None:
    require_native_cpu()
    ops = torch.ops.alexnet_kernels
    x = random_tensor((2, 5, 9, 8), torch.float32, seed=90, channels_last=channels_last)
    geometry = PoolGeometry(x.shape, 3, 2, 1, 1, True)
    torch.library.opcheck(ops.max_pool2d.default,
                          (x.clone().requires_grad_(), *geometry.op_arguments()))
    _, argmax = ops.max_pool2d(x, *geometry.op_arguments())
    grad_y = random_tensor(geometry.output_shape, torch.float32, seed=91,
                           channels_last=channels_last)
    torch.library.opcheck(ops.max_pool2d_backward.default,
                          (grad_y, argmax, list(x.shape), *geometry.op_arguments()))


def test_torch_compile_fullgraph() -> None:
    require_native_cpu()

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.pool = ak.nn.MaxPool2d(3, 2, backend="native")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(torch.relu(self.conv(x)))

    torch.manual_seed(0)
    model = Block()
    assert_compiled_matches_eager(model, random_tensor((2, 3, 15, 15), torch.float32, seed=92))


# ---- API: module, errors -------------------------------------------------------

def test_module_is_drop_in() -> None:
    ours = ak.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    theirs = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    assert isinstance(ours, torch.nn.MaxPool2d)
    assert repr(ours) == repr(theirs)
    x = random_tensor((2, 16, 13, 13), torch.float32, seed=93)
    assert torch.equal(ours(x), theirs(x))
    with_indices = ak.nn.MaxPool2d(2, return_indices=True)
    y, indices = with_indices(x)
    y_ref, indices_ref = torch.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref)
    assert "backend='torch'" in repr(ak.nn.MaxPool2d(3, backend="torch"))


BAD_ARGUMENTS: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: ak.max_pool2d(torch.randn(3, 4), 2), ValueError, "3-D .* or 4-D"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 3, 4, 5), 2), ValueError, "3-D .* or 4-D"),
    (lambda: ak.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int64), 2), TypeError,
     "floating-point"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 0), ValueError,
     "kernel_size must be greater than zero"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 2, stride=0), ValueError,
     "stride must be greater than zero"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 2, stride=-1), ValueError,
     "stride must be greater than zero"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 2, dilation=0), ValueError,
     "dilation must be greater than zero"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 3, padding=2), ValueError,
     "padding must be at most half of kernel_size"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 2, padding=-1), ValueError,
     "padding must be non-negative"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 5), ValueError, "too small for kernel_size"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), (2, 2, 2)), TypeError,
     "kernel_size must be an int or a tuple of two ints"),
    (lambda: ak.max_pool2d(torch.randn(1, 1, 4, 4), 2.5), TypeError,
     "kernel_size must be an int"),
    (lambda: ak.max_pool2d(torch.randn(1, 0, 4, 4), 2), ValueError,
     "empty only along the batch"),
    (lambda: ak.max_pool2d([1.0], 2), TypeError, "must be a torch.Tensor"),
]


@pytest.mark.parametrize("call,error,message", BAD_ARGUMENTS)
def test_bad_arguments(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_bad_arguments_reach_the_kernels_checks() -> None:
    """Direct calls of the registered ops (bypassing Python checks) fail clearly too."""
    require_native_cpu()
    op = torch.ops.alexnet_kernels
    x = torch.randn(1, 2, 6, 6)
    ok = ([3, 3], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="must be 4-D"):
        op.max_pool2d(torch.randn(2, 6, 6), *ok)
    with pytest.raises(RuntimeError, match="stride must be greater than zero"):
        op.max_pool2d(x, [3, 3], [0, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="padding must be at most half"):
        op.max_pool2d(x, [3, 3], [2, 2], [2, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="too small for kernel_size"):
        op.max_pool2d(x, [7, 7], [1, 1], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="must be float64, float32, float16 or bfloat16"):
        op.max_pool2d(x.int(), *ok)
    y, argmax = op.max_pool2d(x, *ok)
    with pytest.raises(RuntimeError, match="grad_y must have the forward's output shape"):
        op.max_pool2d_backward(torch.randn(1, 2, 3, 3), argmax, [1, 2, 6, 6], *ok)
    with pytest.raises(RuntimeError, match="argmax must be Byte"):
        op.max_pool2d_backward(y, argmax.int(), [1, 2, 6, 6], *ok)


def test_cpu_capability_is_reported_and_settable() -> None:
    require_native_cpu()
    assert _extension.cpu_capability() in ("avx512", "avx2", "default")
    assert ak.build_info()["cpu_capability"] == _extension.cpu_capability()
    with cpu_capability("default"):
        assert _extension.cpu_capability() == "default"
    with pytest.raises(ValueError, match="must be 'default', 'avx2' or 'avx512'"):
        _extension.set_cpu_capability("sse9")


# The kernels' grid: at most 65536 blocks of 256 threads along a plane.
_GRID_STEP = 65536 * 256


@pytest.mark.parametrize(
    ("first", "step", "n"),
    [
        (2**31 - 1 - 5 - 2 * _GRID_STEP + 7, _GRID_STEP, 2**31 - 1 - 5),
        (2**31 - 2 - _GRID_STEP, _GRID_STEP, 2**31 - 1),  # the last step lands on n - 1
        (2**31 - 1 - _GRID_STEP, _GRID_STEP, 2**31 - 1),  # ... on n itself
        (3, 256, 1000),
        (700, 256, 300),
    ],
)
def test_grid_stride_loop_ends_before_int32_overflow(first: int, step: int, n: int) -> None:
    """The CUDA kernels walk a plane of up to 2**31 - 1 elements with 32-bit indices in
    steps of the whole grid; near 2**31, ``i += step`` would wrap to a negative index that
    passes ``i < n``, so the loop's next index must end it instead."""
    visited = emulated_ops().grid_stride_indices(first, step, n, 8)
    assert visited == list(range(first, n, step))
