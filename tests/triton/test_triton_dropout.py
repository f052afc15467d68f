"""Dropout in Triton: the same mask as the CPU kernel (and so the CUDA kernel),
PyTorch's formula for kept values, autograd. Runs in Triton's interpreter on
machines without a GPU (helpers.TRITON_DEVICE)."""

from __future__ import annotations

import pytest
import torch
from cases.dropout import MASK_CASES, philox_py, seed_offset, threshold
from helpers import (
    TRITON_DEVICE,
    TRITON_DTYPES,
    assert_close_to_reference,
    random_tensor,
    require_native_cpu,
)

import alexnet_kernels as ak
from alexnet_kernels.triton import dropout as triton_dropout

MASK32 = 0xFFFFFFFF


def run_triton(x: torch.Tensor, so: torch.Tensor, p: float) -> torch.Tensor:
    return triton_dropout.dropout(x.to(TRITON_DEVICE), so, p).cpu()


@pytest.mark.parametrize("numel", [5, 203])
def test_mask_follows_the_convention(numel: int) -> None:
    seed, offset, p = 0xFEDCBA9876543210, (7 << 34) + 20, 0.45
    expected = []
    call = offset // 4
    for group in range((numel + 3) // 4):
        words = philox_py((call & MASK32, call >> 32, group & MASK32, group >> 32),
                          (seed & MASK32, seed >> 32))
        expected += [w < threshold(p) for w in words]
    mask = run_triton(torch.ones(numel), seed_offset(seed, offset), p) != 0
    assert mask.tolist() == expected[:numel]


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("case", list(MASK_CASES))
def test_same_mask_and_values_as_the_cpu_kernel(case: str, dtype: torch.dtype) -> None:
    require_native_cpu()
    x = MASK_CASES[case]().to(dtype)
    so = seed_offset(2**63 + 77, 2**32 + 8)
    cpu = torch.ops.alexnet_kernels.dropout(x, so, 0.35)
    triton = run_triton(x, so, 0.35)
    assert triton.stride() == cpu.stride()
    assert torch.equal(triton == 0, cpu == 0)
    # Kept values: x * scale in fp32, rounded to the dtype, as the CPU kernel
    # (fp16/bf16 through the interpreter's own fp32 -> half rounding).
    assert_close_to_reference(triton, cpu.double())
    if dtype == torch.float32:
        assert torch.equal(triton, cpu)


def test_alexnet_shape_keep_fraction_and_formula() -> None:
    """fc6's input at batch 32: keep fraction within 5 sigma, kept values x / (1 - p)."""
    p = 0.5
    x = random_tensor((32, 9216), torch.float32, seed=3)
    y = run_triton(x, seed_offset(12345, 0), p)
    mask = y != 0
    n = mask.numel()
    assert abs(mask.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    assert torch.equal(y[mask], (x * mask.float().div_(1 - p))[mask])


@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_uses_the_forward_mask(channels_last: bool) -> None:
    x = random_tensor((2, 6, 5, 7), torch.float32, seed=4, channels_last=channels_last)
    x = x.to(TRITON_DEVICE).requires_grad_()
    torch.manual_seed(0)
    y = ak.dropout(x, 0.4, backend="triton")
    grad_y = random_tensor(tuple(x.shape), torch.float32, seed=5).to(TRITON_DEVICE)
    y.backward(grad_y)
    mask = (y != 0).to(torch.float32)
    torch.testing.assert_close(x.grad, grad_y * mask / 0.6, rtol=1e-6, atol=0)


def test_manual_seed_reproduces_and_agrees_with_native() -> None:
    require_native_cpu()
    x = random_tensor((4, 300), torch.float32, seed=6)
    if TRITON_DEVICE != "cpu":
        pytest.skip("the CPU generator's seeds are compared on CPU tensors only")
    torch.manual_seed(42)
    first = ak.dropout(x, 0.5, backend="triton")
    second = ak.dropout(x, 0.5, backend="triton")
    torch.manual_seed(42)
    native = ak.dropout(x, 0.5, backend="native")
    assert torch.equal(first, native)
    assert not torch.equal(first == 0, second == 0)


def test_unusable_device_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if TRITON_DEVICE != "cpu":
        pytest.skip("on a GPU machine CPU tensors are simply not supported")
    with pytest.raises(RuntimeError, match="backend='triton' runs on CUDA tensors"):
        ak.dropout(torch.randn(8), 0.5, backend="triton")


def test_opcheck_schema_and_autograd_registration() -> None:
    """What of opcheck runs here. Fake-tensor propagation (and so torch.compile) of
    a triton_op calls the kernel on tensors without storage, which Triton's
    interpreter cannot do: those checks need a GPU (they run in make test there)."""
    x = random_tensor((3, 50), torch.float32, seed=8).to(TRITON_DEVICE).requires_grad_()
    utils = ("test_schema", "test_autograd_registration")
    if TRITON_DEVICE == "cuda":
        utils += ("test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(torch.ops.alexnet_kernels.dropout_triton.default,
                          (x, seed_offset(3, 4), 0.3), test_utils=utils)


def test_torch_compile_fullgraph_on_gpu() -> None:
    if TRITON_DEVICE != "cuda":
        pytest.skip("torch.compile of a triton_op needs a GPU (the interpreter cannot run "
                    "kernels on fake tensors)")
    module = ak.nn.Dropout(0.5, backend="triton").train()
    compiled = torch.compile(module, fullgraph=True)
    x = random_tensor((64, 256), torch.float32, seed=9).cuda().requires_grad_()
    y = compiled(x)
    y.sum().backward()
    kept = y != 0
    torch.testing.assert_close(y[kept], (x * 2)[kept])
    torch.testing.assert_close(x.grad, kept.float() * 2)
