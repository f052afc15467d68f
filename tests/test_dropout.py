"""Dropout: the Philox mask convention, PyTorch's formula for kept values, and
the same mask on every backend (CPU and the CUDA kernel run in the emulator)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cases.dropout import (
    MASK32,
    MASK_CASES,
    PHILOX_KAT,
    philox_py,
    seed_offset,
    threshold,
)
from helpers import (
    FLOAT_DTYPES,
    KERNEL_PROVIDERS,
    NATIVE_CPU_PROVIDERS,
    assert_close_to_reference,
    emulated_ops,
    native_cpu_context,
    random_tensor,
    require_native_cpu,
    require_native_cuda,
)

import alexnet_kernels as ak

# ---- providers ---------------------------------------------------------------

def run_op(provider: str, x: torch.Tensor, so: torch.Tensor, p: float) -> torch.Tensor:
    if provider == "emulated_cuda":
        return emulated_ops().dropout(x, so, p)
    if provider in NATIVE_CPU_PROVIDERS:
        with native_cpu_context(provider):
            return torch.ops.alexnet_kernels.dropout(x, so, p)
    require_native_cuda()
    return torch.ops.alexnet_kernels.dropout(x.cuda(), so, p).cpu()


def keep_mask(provider: str, shape, so: torch.Tensor, p: float) -> torch.Tensor:
    return run_op(provider, torch.ones(shape), so, p) != 0


PROVIDERS = KERNEL_PROVIDERS


# ---- the generator and the convention ----------------------------------------

@pytest.mark.parametrize("case", range(len(PHILOX_KAT)))
def test_philox_known_answers_emulated_cuda(case: int) -> None:
    counter, key, expected = PHILOX_KAT[case]
    assert [w & MASK32 for w in emulated_ops().philox4x32_10(counter, key)] == list(expected)
    assert philox_py(counter, key) == list(expected)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("numel", [1, 7, 64, 203])
def test_mask_follows_the_convention(provider: str, numel: int) -> None:
    seed, offset, p = 0x0123456789ABCDEF, (5 << 34) + 12, 0.4
    expected = []
    for group in range((numel + 3) // 4):
        call = offset // 4
        words = philox_py((call & MASK32, call >> 32, group & MASK32, group >> 32),
                          (seed & MASK32, seed >> 32))
        expected += [w < threshold(p) for w in words]
    mask = keep_mask(provider, (numel,), seed_offset(seed, offset), p)
    assert mask.tolist() == expected[:numel]


def _assert_keep_fraction(mask: torch.Tensor, p: float) -> None:
    keep = threshold(p) / 2**32
    sigma = math.sqrt(keep * (1 - keep) / mask.numel())
    assert abs(mask.double().mean().item() - keep) < 5 * sigma


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction(p: float) -> None:
    _assert_keep_fraction(keep_mask("native", (1 << 20,), seed_offset(11, 0), p), p)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_emulated_cuda(p: float) -> None:
    _assert_keep_fraction(keep_mask("emulated_cuda", (1 << 14,), seed_offset(12, 3), p), p)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", list(MASK_CASES))
def test_cpu_and_emulated_cuda_agree(case: str, dtype: torch.dtype) -> None:
    x = MASK_CASES[case]().to(dtype)
    so = seed_offset(2**63 + 77, 2**32 + 8)
    cpu = run_op("native", x, so, 0.35)
    emu = run_op("emulated_cuda", x, so, 0.35)
    assert cpu.stride() == emu.stride()
    assert torch.equal(cpu, emu)
    assert torch.equal(torch.signbit(cpu), torch.signbit(emu))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", list(MASK_CASES))
def test_key_read_by_the_kernel_gives_the_same_mask(case: str, dtype: torch.dtype) -> None:
    """A seed_offset on the device is read by the CUDA kernel itself (graph capture draws
    it there); the mask must be the one the host-read key gives."""
    x = MASK_CASES[case]().to(dtype)
    so = seed_offset(2**63 + 77, 2**32 + 8)
    by_value = run_op("emulated_cuda", x, so, 0.35)
    in_memory = emulated_ops().dropout_key_in_memory(x, so, 0.35)
    assert torch.equal(by_value, in_memory)
    other = emulated_ops().dropout_key_in_memory(x, seed_offset(2**63 + 78, 2**32 + 8), 0.35)
    assert not torch.equal(by_value, other)


def test_cuda_graph_replays_draw_new_masks() -> None:
    """Under CUDA graph capture the key is drawn on the device, so every replay has a new
    mask (a key read on the host at capture would freeze it), and the backward applies
    each replay's own mask."""
    require_native_cuda()
    x = torch.randn(4096, device="cuda", requires_grad=True)
    ak.dropout(x, 0.5).sum().backward()  # warm-up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    with torch.cuda.graph(graph):
        y = ak.dropout(x, 0.5)
        y.sum().backward()
    masks = []
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        kept = y != 0
        masks.append(kept.clone())
        scale = torch.where(kept, 2.0, 0.0)
        torch.testing.assert_close(y, x.detach() * scale, rtol=0, atol=0)
        torch.testing.assert_close(x.grad, scale, rtol=0, atol=0)
    assert not torch.equal(masks[0], masks[1])
    assert 0.4 < masks[0].float().mean().item() < 0.6


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_kept_values_follow_pytorch(provider: str, dtype: torch.dtype) -> None:
    p = 0.3
    x = random_tensor((3, 5, 11, 7), dtype, seed=21)
    so = seed_offset(99, 4)
    y = run_op(provider, x, so, p)
    mask = keep_mask(provider, x.shape, so, p)
    assert 0.5 < mask.double().mean() < 0.9
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    if dtype in (torch.float32, torch.float64):
        # Eager's formula: x * noise with noise = bernoulli.div_(1 - p).
        assert torch.equal(y, x * mask.to(dtype).div_(1 - p))
    else:
        assert_close_to_reference(y, x.double() * mask / (1 - p))


def test_signed_zero_and_nan_like_pytorch() -> None:
    require_native_cpu()
    x = torch.tensor([-1.0, float("nan"), float("inf"), -2.0] * 64)
    y = torch.ops.alexnet_kernels.dropout(x, seed_offset(5, 0), 0.5)
    dropped = keep_mask("native", x.shape, seed_offset(5, 0), 0.5).logical_not()
    expected = x * torch.where(dropped, 0.0, 2.0)
    assert torch.equal(torch.signbit(y), torch.signbit(expected))
    assert torch.equal(y.isnan(), expected.isnan())


# ---- autograd -------------------------------------------------------------------

@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_uses_the_forward_mask(channels_last: bool) -> None:
    require_native_cpu()
    x = random_tensor((4, 6, 5, 3), torch.float32, seed=31, channels_last=channels_last)
    x.requires_grad_()
    grad_y = random_tensor((4, 6, 5, 3), torch.float32, seed=32)  # contiguous either way
    y = ak.dropout(x, 0.4, backend="native")
    y.backward(grad_y)
    mask = y.detach() != 0
    assert torch.equal(x.grad, grad_y * mask.float().div_(0.6))


def test_gradcheck() -> None:
    require_native_cpu()
    so = seed_offset(123, 8)
    x = random_tensor((3, 4, 5), torch.float64, seed=41).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: torch.ops.alexnet_kernels.dropout(t, so, 0.3), (x,))
    assert torch.autograd.gradgradcheck(
        lambda t: torch.ops.alexnet_kernels.dropout(t, so, 0.3), (x,))

    def reseeded(t: torch.Tensor) -> torch.Tensor:
        return ak.dropout(t, 0.5, generator=torch.Generator().manual_seed(3), backend="native")

    assert torch.autograd.gradcheck(reseeded, (x,))


def test_opcheck() -> None:
    require_native_cpu()
    for channels_last in (False, True):
        x = random_tensor((2, 7, 4, 5), torch.float32, seed=51, channels_last=channels_last)
        torch.library.opcheck(torch.ops.alexnet_kernels.dropout.default,
                              (x.requires_grad_(), seed_offset(7, 4), 0.25))
    strided = random_tensor((6, 10), torch.float32, seed=52)[:, ::3]
    torch.library.opcheck(torch.ops.alexnet_kernels.dropout.default,
                          (strided, seed_offset(7, 4), 0.25))


def test_torch_compile_fullgraph() -> None:
    require_native_cpu()
    torch._dynamo.reset()
    p = 0.4

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = ak.nn.Dropout(p, backend="native")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(torch.relu(x) + 1.0)

    compiled = torch.compile(Block(), fullgraph=True)
    x = random_tensor((8, 300), torch.float32, seed=61).requires_grad_()
    grad_y = random_tensor((8, 300), torch.float32, seed=62)
    y = compiled(x)
    y.backward(grad_y)
    h = torch.relu(x.detach()) + 1.0  # never zero, so y == 0 marks exactly the dropped ones
    kept = y.detach() != 0
    assert 0.45 < kept.double().mean() < 0.75
    scale = torch.ones(()).div_(1 - p)
    assert torch.equal(y.detach()[kept], h[kept] * scale)
    expected_grad = torch.where(x.detach() > 0, grad_y * kept * scale, 0.0)
    torch.testing.assert_close(x.grad, expected_grad, rtol=0, atol=0)


# ---- seeding --------------------------------------------------------------------

def test_manual_seed_reproduces_and_calls_differ() -> None:
    require_native_cpu()
    x = torch.ones(4096)
    torch.manual_seed(5)
    a, b = ak.dropout(x, backend="native"), ak.dropout(x, backend="native")
    torch.manual_seed(5)
    assert torch.equal(ak.dropout(x, backend="native"), a)
    assert not torch.equal(a, b)  # consecutive calls draw new numbers
    torch.manual_seed(6)
    assert not torch.equal(ak.dropout(x, backend="native"), a)


def test_explicit_generator() -> None:
    require_native_cpu()
    x = torch.ones(4096)
    g = torch.Generator().manual_seed(9)
    a = ak.dropout(x, generator=g, backend="native")
    b = ak.dropout(x, generator=g, backend="native")
    assert not torch.equal(a, b)
    g.manual_seed(9)
    assert torch.equal(ak.dropout(x, generator=g, backend="native"), a)
    assert not torch.equal(ak.dropout(x, generator=torch.Generator().manual_seed(10),
                                      backend="native"), a)


# ---- semantics of F.dropout ---------------------------------------------------------

@pytest.mark.parametrize("backend", ["native", "torch"])
def test_trivial_cases_like_pytorch(backend: str) -> None:
    if backend == "native":
        require_native_cpu()
    x = random_tensor((3, 4), torch.float32, seed=71)
    assert ak.dropout(x, 0.5, training=False, backend=backend) is x
    assert ak.dropout(x, 0.0, backend=backend) is x
    x[0, 0] = float("nan")
    ones = ak.dropout(x, 1.0, backend=backend)
    assert torch.equal(ones.isnan(), x.isnan())
    assert (ones[~x.isnan()] == 0).all()
    empty = torch.empty(0, 3)
    assert ak.dropout(empty, 0.5, backend=backend).shape == (0, 3)


def test_inplace() -> None:
    require_native_cpu()
    x = random_tensor((5, 9), torch.float32, seed=72)
    g = torch.Generator().manual_seed(1)
    expected = ak.dropout(x, 0.5, generator=g, backend="native")
    g.manual_seed(1)
    target = x.clone()
    out = ak.dropout(target, 0.5, inplace=True, generator=g, backend="native")
    assert out is target and torch.equal(target, expected)
    module = ak.nn.Dropout(0.5, inplace=True, backend="native")
    y = x.clone()
    assert module(y) is y


def test_dense_permutation_keeps_memory_order() -> None:
    require_native_cpu()
    base = random_tensor((6, 9), torch.float32, seed=73)
    so = seed_offset(3, 0)
    y = torch.ops.alexnet_kernels.dropout(base.t(), so, 0.5)
    assert y.stride() == base.t().stride()
    assert torch.equal(y, torch.ops.alexnet_kernels.dropout(base, so, 0.5).t())


@pytest.mark.parametrize("p", [-0.1, 1.5, math.nan])
def test_bad_p(p: float) -> None:
    with pytest.raises(ValueError, match="p must be between 0 and 1"):
        ak.dropout(torch.ones(3), p)
    with pytest.raises(ValueError, match="p must be between 0 and 1"):
        ak.dropout(torch.ones(3), p, backend="torch")
    with pytest.raises(ValueError, match="between 0 and 1"):
        ak.nn.Dropout(p)(torch.ones(3))


def test_bad_arguments_reach_the_kernels_checks() -> None:
    require_native_cpu()
    op = torch.ops.alexnet_kernels.dropout
    x = torch.ones(8)
    with pytest.raises(RuntimeError, match=r"needs 0 < p < 1.*got p = 0"):
        op(x, seed_offset(1, 0), 0.0)
    with pytest.raises(RuntimeError, match="seed_offset must be an int64 tensor, got Int"):
        op(x, torch.zeros(2, dtype=torch.int32), 0.5)
    with pytest.raises(RuntimeError, match=r"holding \(seed, offset\), got shape \[3\]"):
        op(x, torch.zeros(3, dtype=torch.int64), 0.5)
    with pytest.raises(RuntimeError, match="x must be float64, float32, float16 or bfloat16"):
        op(torch.ones(8, dtype=torch.int32), seed_offset(1, 0), 0.5)
    with pytest.raises(TypeError, match="p must be a real number"):
        ak.dropout(x, "0.5")


def test_module_is_drop_in() -> None:
    ours, theirs = ak.nn.Dropout(0.3), torch.nn.Dropout(0.3)
    assert isinstance(ours, torch.nn.Dropout)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = random_tensor((4, 5), torch.float32, seed=74)
    assert torch.equal(ours.eval()(x), theirs.eval()(x))
    assert "backend='torch'" in repr(ak.nn.Dropout(backend="torch"))


def test_torch_backend_is_pytorch() -> None:
    x = random_tensor((64, 64), torch.float32, seed=75)
    torch.manual_seed(2)
    expected = F.dropout(x, 0.3)
    torch.manual_seed(2)
    assert torch.equal(ak.dropout(x, 0.3, backend="torch"), expected)
    g = torch.Generator().manual_seed(4)
    y = ak.dropout(x, 0.3, generator=g, backend="torch")
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * torch.ones(()).div_(0.7))
