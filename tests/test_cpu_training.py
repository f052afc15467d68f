"""The CPU training step's own passes (the ReLU mask of the fused conv backward, the
reuse of large output blocks) and the bf16 autocast step.

The mask is reached through the raw ``conv2d_relu_backward`` op with a 1x1 identity
weight, whose input gradient is then the masked grad_y exactly in every dtype
(products with 1 and sums with 0), so it can be compared bit for bit with
``threshold_backward`` in float64, F.relu's backward.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from helpers import (
    NATIVE_CPU_PROVIDERS,
    assert_close_to_reference,
    native_cpu_context,
    random_tensor,
    require_native_cpu,
)
from torch.utils._python_dispatch import TorchDispatchMode

import alexnet_kernels as ak
from alexnet_kernels.models import alexnet_paper

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



# Outputs of 16 MiB and more (csrc/cpu/allocation.cpp) come from blocks that the next
# output of the same size reuses, holding whatever the previous tensor left there, so
# every kernel must write all of its output. Each case plants freed blocks whose every
# byte is 0xff (NaN in floats) at exactly its outputs' sizes, checks they were reused,
# and compares with PyTorch. x: 1x64x256x256 float32, 16.8 MB.
LARGE = (1, 64, 256, 256)


def _plant_blocks(nbytes: int, count: int) -> set[int]:
    """Empties the cache, then leaves `count` freed 0xff-filled output blocks of `nbytes`
    (a multiple of 4) in it; their addresses."""
    ak.empty_cpu_cache()
    planted = [torch.ops.alexnet_kernels.lrn(torch.ones(1, 1, nbytes // 4), 1, 1e-4, 0.75, 1.0)
               for _ in range(count)]
    for block in planted:
        block.view(torch.uint8).fill_(0xFF)
    return {block.data_ptr() for block in planted}


def _lrn_case(x: torch.Tensor, grad: torch.Tensor):
    x64 = x.double().requires_grad_()
    y64 = torch.nn.functional.local_response_norm(x64, 5, 1e-4, 0.75, 2.0)
    y64.backward(grad.double())
    xd = x.clone().requires_grad_()
    y = ak.lrn(xd, 5, 1e-4, 0.75, 2.0, backend="native")
    y.backward(grad)
    return [y, xd.grad], [y64.detach(), x64.grad]


def _max_pool_backward_case(x: torch.Tensor, grad: torch.Tensor):
    x64 = x.double().requires_grad_()
    y64 = torch.nn.functional.max_pool2d(x64, 3, 2)
    y64.backward(grad[..., :127, :127].double())
    xd = x.clone().requires_grad_()
    y = ak.max_pool2d(xd, 3, 2, backend="native")
    y.backward(grad[..., :127, :127])
    return [xd.grad], [x64.grad]


def _max_pool_forward_case(x: torch.Tensor, grad: torch.Tensor):
    big = x.repeat(1, 1, 3, 3)[..., :513, :513].contiguous()  # pooled: 1x64x256x256
    return ([ak.max_pool2d(big, 3, 2, backend="native")],
            [torch.nn.functional.max_pool2d(big.double(), 3, 2)])


def _relu_mask_case(x: torch.Tensor, grad: torch.Tensor):
    return [_masked_by_the_op(grad, x)], [
        torch.ops.aten.threshold_backward(grad.double(), x.double(), 0)]


@pytest.mark.parametrize("case", [_lrn_case, _max_pool_backward_case, _max_pool_forward_case,
                                  _relu_mask_case],
                         ids=["lrn", "max_pool_backward", "max_pool_forward", "relu_mask"])
def test_reused_large_blocks_are_fully_rewritten(case) -> None:
    require_native_cpu()
    x = random_tensor(LARGE, torch.float32, seed=115)
    grad = random_tensor(LARGE, torch.float32, seed=116)
    planted = _plant_blocks(x.numel() * x.element_size(), count=3)
    ours, expected = case(x, grad)
    if case is not _relu_mask_case:  # the mask is an intermediate of grad_x there
        assert planted & {t.data_ptr() for t in ours}, "no output reused a planted block"
    for actual, reference in zip(ours, expected, strict=True):
        assert_close_to_reference(actual, reference)


def test_empty_cpu_cache_frees_the_kept_blocks() -> None:
    require_native_cpu()
    nbytes = 4 * LARGE[1] * LARGE[2] * LARGE[3]
    _plant_blocks(nbytes, count=2)
    assert ak.empty_cpu_cache() == 2 * nbytes  # a multiple of 2 MiB: not rounded up
    assert ak.empty_cpu_cache() == 0


def test_dropout_rewrites_a_reused_large_block() -> None:
    """Every element of a dropout output is 0 or x / (1 - p), none left from the block."""
    require_native_cpu()
    x = random_tensor(LARGE, torch.float32, seed=117)
    planted = _plant_blocks(x.numel() * x.element_size(), count=1)
    torch.manual_seed(3)
    y = ak.dropout(x, 0.5, training=True, backend="native")
    assert y.data_ptr() in planted
    kept = y != 0
    torch.testing.assert_close(y[kept], (x[kept] * 2.0))
    assert 0.45 < kept.double().mean().item() < 0.55


class _OpDtypes(TorchDispatchMode):
    """The floating dtypes of the tensor arguments of every alexnet_kernels op."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.name())
        if name.startswith("alexnet_kernels::"):
            floats = {a.dtype for a in args if isinstance(a, torch.Tensor)
                      and a.is_floating_point()}
            self.seen.setdefault(name, set()).update(floats)
        return func(*args, **(kwargs or {}))


def _paper_step(backend: str, dtype: torch.dtype, autocast: bool,
                mode: TorchDispatchMode | None = None) -> list[torch.Tensor]:
    """(loss, conv1 weight gradient), as float64, of one forward+backward of alexnet_paper."""
    torch.manual_seed(0)
    model = alexnet_paper(num_classes=10, dropout=0.0, backend=backend).to(dtype).train()
    images = random_tensor((2, 3, 227, 227), torch.float64, seed=116).to(dtype)
    labels = torch.tensor([3, 7])
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", torch.bfloat16, enabled=autocast))
        if mode is not None:
            stack.enter_context(mode)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
    return [loss.double(), model.features[0].weight.grad.double()]


def test_bf16_autocast_step_stays_in_bf16_and_matches_float64() -> None:
    """Under torch.autocast("cpu", torch.bfloat16) every op of ours, forward and
    backward, runs on bf16 tensors (no float32 detour), the loss equals float64's to
    the bf16 tolerance and the gradient is as close to float64's as eager bf16's."""
    require_native_cpu()
    dtypes = _OpDtypes()
    ours = _paper_step("native", torch.float32, True, dtypes)
    eager = _paper_step("torch", torch.float32, True)
    reference = _paper_step("torch", torch.float64, False)
    assert set(dtypes.seen) >= {"alexnet_kernels::conv2d_relu", "alexnet_kernels::lrn",
                                "alexnet_kernels::max_pool2d",
                                "alexnet_kernels::conv2d_relu_backward",
                                "alexnet_kernels::lrn_backward",
                                "alexnet_kernels::max_pool2d_backward"}
    assert all(seen == {torch.bfloat16} for seen in dtypes.seen.values()), dtypes.seen
    assert_close_to_reference(ours[0].to(torch.bfloat16), reference[0])

    def error(grad: torch.Tensor) -> float:
        return ((grad - reference[1]).norm() / reference[1].norm()).item()

    # A whole bf16 network's gradient is 10-30% off float64's; ours may not add to that.
    assert error(ours[1]) <= 1.2 * error(eager[1]) + 1e-3
