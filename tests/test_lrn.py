"""LRN: every implementation against F.local_response_norm computed in float64."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from cases.lrn import (
    ODD_CASES,
    PAPER,
    STRONG,
    check_against_reference,
    forward_backward,
    reference,
)
from helpers import (
    FLOAT_DTYPES,
    KERNEL_PROVIDERS,
    assert_close_to_reference,
    assert_compiled_matches_eager,
    emulated_ops,
    random_tensor,
    require_native_cpu,
)

import alexnet_kernels as ak
from alexnet_kernels import _extension, backends

ALEXNET_SHAPES = [(2, 96, 55, 55), (2, 256, 27, 27), (2, 64, 55, 55), (2, 192, 27, 27)]


# "native" runs the CPU kernels' widest instruction set; the two forced
# variants run the narrower ones (skipped where the CPU lacks them).
PROVIDERS = KERNEL_PROVIDERS


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(ODD_CASES)))
def test_odd_shapes(provider: str, dtype: torch.dtype, case: int) -> None:
    shape, params = ODD_CASES[case]
    check_against_reference(provider, shape, dtype, params, seed=100 + case)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 5, 3), (2, 40, 6, 5), (2, 5, 3, 4, 2)], ids=str)
def test_channels_last(provider: str, dtype: torch.dtype, shape) -> None:
    check_against_reference(provider, shape, dtype, STRONG, seed=7, channels_last=True)


@pytest.mark.parametrize("provider", ["native", "native_avx2", "native_baseline", "native_cuda"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", ALEXNET_SHAPES, ids=str)
def test_alexnet_shapes(provider: str, dtype: torch.dtype, shape) -> None:
    check_against_reference(provider, shape, dtype, PAPER, seed=1)
    check_against_reference(provider, shape, dtype, STRONG, seed=2, channels_last=True)


@pytest.mark.parametrize("shape", [(1, 96, 55, 55), (1, 256, 13, 13)], ids=str)
def test_emulated_cuda_alexnet_shapes(shape) -> None:
    check_against_reference("emulated_cuda", shape, torch.float32, PAPER, seed=3)
    check_against_reference("emulated_cuda", shape, torch.float32, STRONG, seed=4,
                            channels_last=True)


# The CUDA kernels' (N, C, pixels) path moves 16-byte chunks and hands their parts to
# the lanes that own them: planes whose size is odd start at every offset within 16
# bytes; the buffer's own start may be off by one element (a view with an offset); a
# plane of 1147 pixels spans two fp32 blocks and ends inside a warp and a lane.
CHUNK_SHAPES = [(2, 9, 13, 29), (1, 6, 37, 31)]
CHUNK_PARAMS = [PAPER, STRONG, (4, 0.7, 0.5, 1.0), (3, 0.9, 1.3, 0.5)]


def _offset_by_one(x: torch.Tensor) -> torch.Tensor:
    """x's values in a contiguous view that starts one element into its buffer."""
    buffer = torch.empty(x.numel() + 1, dtype=x.dtype)
    view = buffer[1:].view(x.shape)
    view.copy_(x)
    return view


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", CHUNK_SHAPES, ids=str)
def test_emulated_cuda_chunk_exchange(dtype: torch.dtype, shape) -> None:
    for i, params in enumerate(CHUNK_PARAMS):
        x = random_tensor(shape, dtype, seed=200 + i)
        grad_y = random_tensor(shape, dtype, seed=300 + i)
        if i % 2:
            x, grad_y = _offset_by_one(x), _offset_by_one(grad_y)
            assert x.data_ptr() % 16 != 0
        y, grad_x = forward_backward("emulated_cuda", x, grad_y, params)
        y_ref, grad_ref = reference(x, grad_y, params)
        assert_close_to_reference(y, y_ref)
        assert_close_to_reference(grad_x, grad_ref)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_emulated_cuda_running_sums_recover_from_large_and_non_finite_values(
        channels_last: bool) -> None:
    """A square 1e20 times the others enters and leaves the running window sum (fp32
    would keep nothing of the small ones after subtracting it), as does a gradient
    spike in the backward's second running sum; an inf and a NaN make exactly the
    windows that hold them inf / NaN."""
    shape = (1, 40, 9, 17)
    x = random_tensor(shape, torch.float32, seed=400)
    grad_y = random_tensor(shape, torch.float32, seed=401)
    x[0, 5] *= 1e10
    grad_y[0, 12] *= 1e12
    x[0, 20, 2, 3] = float("inf")
    x[0, 30, 4, 5] = float("nan")
    if channels_last:
        x, grad_y = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad_y))
    y, grad_x = forward_backward("emulated_cuda", x, grad_y, STRONG)
    y_ref, grad_ref = reference(x, grad_y, STRONG)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    finite = x.isfinite().all(dim=1, keepdim=True).expand_as(x)  # PyTorch's grad: NaN there
    torch.testing.assert_close(grad_x.double()[finite], grad_ref[finite], rtol=1e-5, atol=1e-6)


def test_emulated_cuda_channels_last_window_wider_than_a_chunk() -> None:
    """size 67 (half-windows of 33 > 32 channels): the channels_last kernels' wide path."""
    check_against_reference("emulated_cuda", (2, 70, 3, 2), torch.float32,
                            (67, 0.5, 0.75, 1.0), seed=410, channels_last=True)
    check_against_reference("emulated_cuda", (2, 70, 3, 2), torch.float32,
                            (67, 0.5, 0.75, 1.0), seed=411)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_contiguous_input(provider: str) -> None:
    base = random_tensor((5, 3, 9, 4), torch.float32, seed=11)
    x = base.transpose(0, 1)  # (3, 5, 9, 4), neither contiguous nor channels_last
    grad_y = random_tensor(tuple(x.shape), torch.float32, seed=12)
    y, grad_x = forward_backward(provider, x, grad_y, STRONG)
    y_ref, grad_ref = reference(x, grad_y, STRONG)
    assert_close_to_reference(y, y_ref)
    assert_close_to_reference(grad_x, grad_ref)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", [(0, 8, 3, 3), (2, 0, 3, 3), (2, 4, 0, 3)], ids=str)
def test_empty(provider: str, shape) -> None:
    x = torch.empty(shape)
    y, grad_x = forward_backward(provider, x, torch.empty(shape), PAPER)
    assert y.shape == shape and grad_x.shape == shape


def test_large_window_backend_fallback_message() -> None:
    """A window larger than any channel count still works on the CPU and emulated CUDA."""
    for provider in ("native", "emulated_cuda"):
        check_against_reference(provider, (1, 9, 3, 3), torch.float64, (41, 0.7, 0.75, 1.0),
                                seed=5)


# ---- gradients, op registration, torch.compile --------------------------------

def test_gradcheck() -> None:
    require_native_cpu()
    for channels_last in (False, True):
        x = random_tensor((2, 6, 3, 4), torch.float64, seed=21, channels_last=channels_last)
        x.requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: ak.lrn(t, 3, 0.8, 0.75, 1.0, backend="native"), (x,))


def test_gradcheck_emulated_cuda() -> None:
    ops = emulated_ops()

    class EmulatedLrn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = ops.lrn(x, 4, 0.8, 0.6, 1.0)
            ctx.save_for_backward(x, y)
            return y

        @staticmethod
        def backward(ctx, grad_y):
            x, y = ctx.saved_tensors
            return ops.lrn_backward(grad_y.contiguous(), x, y, 4, 0.8, 0.6, 1.0)

    x = random_tensor((1, 6, 2, 3), torch.float64, seed=22).requires_grad_()
    assert torch.autograd.gradcheck(EmulatedLrn.apply, (x,))


def test_opcheck() -> None:
    require_native_cpu()
    for channels_last in (False, True):
        x = random_tensor((2, 7, 4, 5), torch.float32, seed=31, channels_last=channels_last)
        torch.library.opcheck(torch.ops.alexnet_kernels.lrn.default,
                              (x.requires_grad_(), 5, 0.1, 0.75, 2.0))
        x = x.detach()
        y = torch.ops.alexnet_kernels.lrn(x, 5, 0.1, 0.75, 2.0)
        g = random_tensor(tuple(x.shape), torch.float32, seed=32, channels_last=channels_last)
        torch.library.opcheck(torch.ops.alexnet_kernels.lrn_backward.default,
                              (g, x, y, 5, 0.1, 0.75, 2.0))


def test_torch_compile_fullgraph() -> None:
    require_native_cpu()

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.norm = ak.nn.LocalResponseNorm(5, 0.2, 0.75, 2.0, backend="native")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(torch.relu(self.conv(x)))

    torch.manual_seed(0)
    model = Block()
    assert_compiled_matches_eager(model, random_tensor((2, 3, 9, 9), torch.float32, seed=41))


# ---- API: module, backends, errors --------------------------------------------

def test_module_is_drop_in() -> None:
    ours = ak.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    theirs = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    assert isinstance(ours, torch.nn.LocalResponseNorm)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = random_tensor((2, 16, 5, 5), torch.float32, seed=51)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    assert "backend='torch'" in repr(ak.nn.LocalResponseNorm(3, backend="torch"))


def test_functional_defaults_match_pytorch() -> None:
    x = random_tensor((2, 9, 4, 4), torch.float64, seed=52)
    torch.testing.assert_close(ak.lrn(x, 3), F.local_response_norm(x, 3), rtol=1e-12, atol=0)


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    expected_auto = "native" if _extension.is_loaded() else "torch"
    assert backends.resolve("auto", cpu, "lrn", ("native", "torch")) == expected_auto
    with ak.use_backend("torch"):
        assert ak.get_backend() == "torch"
        assert backends.resolve("auto", cpu, "lrn", ("native", "torch")) == "torch"
        # An explicit per-call backend wins over the process default.
        assert backends.resolve("native", cpu, "lrn", ("native", "torch")) == "native"
    assert ak.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        ak.set_backend("cudnn")
    with pytest.raises(NotImplementedError, match="backend='triton' is not implemented"):
        backends.resolve("triton", cpu, "lrn", ("native", "torch"))
    # Outside Triton's interpreter, Triton kernels need CUDA tensors (or the package).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match=r"backend='triton' (runs on CUDA|needs the triton)"):
        ak.lrn(torch.randn(1, 3, 2, 2), 3, backend="triton")


def test_native_cuda_on_cpu_only_build_is_explained() -> None:
    if _extension.with_cuda():
        pytest.skip("this build has CUDA kernels")
    with pytest.raises(RuntimeError, match="no kernel for cuda tensors"):
        backends.resolve("native", torch.device("cuda"), "lrn", ("native", "torch"))


BAD_ARGUMENTS: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: ak.lrn(torch.randn(2, 3), 3), ValueError, "at least 3 dimensions"),
    (lambda: ak.lrn(torch.ones(1, 3, 2, 2, dtype=torch.int64), 3), TypeError, "floating-point"),
    (lambda: ak.lrn(torch.randn(1, 3, 2, 2), 0), ValueError, "size must be >= 1"),
    (lambda: ak.lrn(torch.randn(1, 3, 2, 2), 2.5), TypeError, "size must be an int"),
    (lambda: ak.lrn(torch.randn(1, 3, 2, 2), 3, k=math.inf), ValueError, "k must be finite"),
    (lambda: ak.lrn(torch.randn(1, 3, 2, 2), 3, alpha=math.nan), ValueError,
     "alpha must be finite"),
    (lambda: ak.lrn([1.0, 2.0], 3), TypeError, "must be a torch.Tensor"),
]


@pytest.mark.parametrize("call,error,message", BAD_ARGUMENTS)
def test_bad_arguments(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_bad_arguments_reach_the_kernels_checks() -> None:
    """Direct calls of the registered ops (bypassing Python checks) fail clearly too."""
    require_native_cpu()
    op = torch.ops.alexnet_kernels
    with pytest.raises(RuntimeError, match="at least 3 dimensions"):
        op.lrn(torch.randn(2, 3), 3, 1e-4, 0.75, 1.0)
    with pytest.raises(RuntimeError, match="size must be >= 1"):
        op.lrn(torch.randn(1, 3, 2, 2), 0, 1e-4, 0.75, 1.0)
    with pytest.raises(RuntimeError, match="k must be finite"):
        op.lrn(torch.randn(1, 3, 2, 2), 3, 1e-4, 0.75, math.inf)
    with pytest.raises(RuntimeError, match="must be float64, float32, float16 or bfloat16"):
        op.lrn(torch.ones(1, 3, 2, 2, dtype=torch.int32), 3, 1e-4, 0.75, 1.0)
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(RuntimeError, match="must have the same shape"):
        op.lrn_backward(torch.randn(1, 3, 2, 1), x, x, 3, 1e-4, 0.75, 1.0)
    with pytest.raises(RuntimeError, match="must have the same dtype"):
        op.lrn_backward(x.double(), x, x, 3, 1e-4, 0.75, 1.0)


def test_missing_library_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str):
        raise ImportError("libfoo.so: cannot open shared object file")

    monkeypatch.setattr(importlib, "import_module", fail)
    library, error = _extension._load()
    assert library is None
    assert "pip install --no-build-isolation" in error and "libfoo.so" in error


def test_library_built_for_another_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stale:
        torch_version = "1.0.0"
        with_cuda = 0
        cuda_arch_list = ""

    monkeypatch.setattr(importlib, "import_module", lambda name: Stale)
    library, error = _extension._load()
    assert library is None
    assert "built against torch 1.0.0" in error and torch.__version__ in error


# ---- regressions found by the fuzz tests (tests/test_fuzz_lrn.py) -----------------

REGRESSION_PROVIDERS = [*PROVIDERS, "triton"]


@pytest.mark.parametrize("provider", REGRESSION_PROVIDERS)
def test_beta_zero_is_the_identity_with_pytorchs_gradient(provider: str) -> None:
    # S ** -0 is 1 for every S, so y = x; the backward once formed
    # x * (-beta) * S ** (-beta - 1) * sum, a NaN where S underflows to 0 or x is inf.
    x = random_tensor((2, 7, 4, 3), torch.float32, 70)
    x[0, 2, 1, 1], x[1, 5, 0, 2] = float("inf"), 1e30
    grad_y = random_tensor(x.shape, torch.float32, 71)
    params = (3, 0.7, 0.0, 0.0)
    y, grad_x = forward_backward(provider, x, grad_y, params)
    y_ref, grad_ref = reference(x, grad_y, params)
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grad_x.double(), grad_ref, rtol=1e-6, atol=1e-6,
                               equal_nan=True)


@pytest.mark.parametrize("provider", REGRESSION_PROVIDERS)
def test_subnormal_input_with_infinite_gradient(provider: str) -> None:
    # The window term of the backward once was (x * coef) * sum: a subnormal x times a
    # small coef underflows to 0, and 0 * sum is NaN where an infinite grad_y makes the
    # sum inf. As x * (coef * sum) it is +-inf, as in the float64 reference.
    tiny = torch.finfo(torch.float32).tiny
    x = random_tensor((1, 5, 3, 3), torch.float32, 72) * (tiny / 8)
    grad_y = random_tensor(x.shape, torch.float32, 73)
    grad_y[0, 2, 1, 1] = float("inf")
    params = (3, 1e-8, 0.75, 2.0)
    y, grad_x = forward_backward(provider, x, grad_y, params)
    y_ref, grad_ref = reference(x, grad_y, params)
    assert_close_to_reference(y, y_ref)
    assert grad_ref.isinf().any()  # the case this test is about
    assert torch.equal(grad_x.isnan(), grad_ref.isnan())
    torch.testing.assert_close(grad_x.double(), grad_ref, rtol=1e-5, atol=1e-30,
                               equal_nan=True)
