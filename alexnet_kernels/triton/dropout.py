"""Dropout in Triton, with the same mask as the CPU and CUDA kernels.

The mask convention is the one of ``csrc/kernels/philox.cuh`` (see
``alexnet_kernels.ops.dropout``): Philox4x32-10 keyed by the 64-bit seed, counter
``(offset // 4, group)`` as four 32-bit words, the four output words deciding
elements ``4 * group .. 4 * group + 3`` of the tensor in memory order, an
element kept iff its word is below ``threshold``. ``tl.philox`` implements the
same rounds and key schedule, so the masks agree bit for bit.

(seed, offset) are read inside the kernel from the ``seed_offset`` tensor, so
launches stay free of host synchronisation and graph-capturable.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from alexnet_kernels.ops import _autograd
from alexnet_kernels.triton import AotKernel, autotune_configs

_CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 4096}, num_warps=8),
]
# One large block: the interpreter's cost is per program.
_DEFAULT = triton.Config({"BLOCK": 4096}, num_warps=8)


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=["numel"])
@triton.jit
def dropout_kernel(x_ptr, y_ptr, seed_offset_ptr, numel, threshold, scale,
                   BLOCK: tl.constexpr):
    """y = x * (keep ? scale : 0) for elements [pid * BLOCK, (pid + 1) * BLOCK)."""
    GROUPS: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    seed = tl.load(seed_offset_ptr)
    call = tl.load(seed_offset_ptr + 1).to(tl.uint64, bitcast=True) >> 2
    groups = pid * GROUPS + tl.arange(0, GROUPS).to(tl.int64)
    zeros = tl.zeros((GROUPS,), dtype=tl.uint32)
    r0, r1, r2, r3 = tl.philox(
        seed,
        zeros + (call & 0xFFFFFFFF).to(tl.uint32),
        zeros + (call >> 32).to(tl.uint32),
        (groups & 0xFFFFFFFF).to(tl.uint32),
        (groups >> 32).to(tl.uint32),
    )
    # Words in element order: r0[g], r1[g], r2[g], r3[g], r0[g + 1], ...
    words = tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3))
    offsets = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offsets < numel
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    factor = tl.where(words < threshold, scale, 0.0)
    tl.store(y_ptr + offsets, (x * factor).to(y_ptr.dtype.element_ty), mask=mask)


def threshold_and_scale(p: float) -> tuple[int, float]:
    """The keep threshold on raw 32-bit words, and 1 / (1 - p) rounded as the CPU kernel does."""
    threshold = min(int((1.0 - p) * 2**32), 2**32 - 1)
    one_minus_p = torch.tensor(1.0 - p, dtype=torch.float32).item()
    return threshold, 1.0 / one_minus_p


def _input_like(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x in y's memory order (x itself when x is dense)."""
    return x if x.stride() == y.stride() else torch.empty_like(y).copy_(x)


@triton_op("alexnet_kernels::dropout_triton", mutates_args=())
def dropout(x: torch.Tensor, seed_offset: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout with 0 < p < 1 and the shared mask convention; y has x's layout."""
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    x = _input_like(x, y)
    threshold, scale = threshold_and_scale(p)
    numel = x.numel()

    def grid(meta):
        return (triton.cdiv(numel, meta["BLOCK"]),)

    wrap_triton(dropout_kernel)[grid](x, y, seed_offset.to(x.device), numel, threshold, scale)
    return y


_autograd.register(dropout, _autograd.dropout_rules(dropout))


def _aot_kernels() -> list[AotKernel]:
    kernels = []
    for dtype in ("fp32", "fp16", "bf16"):
        for config in _CONFIGS:
            block = config.kwargs["BLOCK"]
            kernels.append(AotKernel(
                name=f"dropout_kernel[{dtype}, BLOCK={block}]",
                fn=dropout_kernel.fn,
                signature={"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "seed_offset_ptr": "*i64",
                           "numel": "i64", "threshold": "i64", "scale": "fp32",
                           "BLOCK": "constexpr"},
                constexprs={"BLOCK": block},
                num_warps=config.num_warps,
            ))
    return kernels


AOT_KERNELS = _aot_kernels()
