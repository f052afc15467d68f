"""Cross-channel LRN in Triton, forward and backward (see ``alexnet_kernels.ops.lrn``).

The tensor is viewed as (N, C, pixels), the spatial dimensions flattened, stored
either contiguously or channels_last, i.e. (N, pixels, C) in memory; the output
is written in the same layout. A program owns a tile of BLOCK_C channels x
BLOCK_P pixels of one image. Triton has no way to shift a register tile along
the channel axis, so the window sums load the shifted channel rows of the tile
(masked at the channel edges) once per window offset; those rows overlap the
tile's own, so after the first they are cache hits rather than DRAM traffic.

The backward needs, for each channel c, g*y/S at every channel j whose window
contains c, and S[j] needs x over j's window: the kernel recomputes those window
sums from x (about size^2 cached loads per element) instead of writing g*y/S to a
scratch tensor and reading it back, which would cost two more DRAM passes.

All arithmetic is in fp32; the half types are upcast on load.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from alexnet_kernels.ops import _autograd
from alexnet_kernels.ops.layout import output_memory_format
from alexnet_kernels.triton import AotKernel, autotune_configs

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Contiguous input wants long pixel rows, channels_last input wide channel
# columns; autotuning picks per shape and layout. Tiles hold 4 to 8 elements per
# thread: every element costs about 8 registers in the forward and 15 in the
# backward (its fp32 partial sums and 32-bit offsets), and more per thread would
# cut occupancy of a kernel that is bound by memory.
_CONFIGS = [
    triton.Config({"BLOCK_C": 8, "BLOCK_P": 64}, num_warps=4),
    triton.Config({"BLOCK_C": 8, "BLOCK_P": 128}, num_warps=4),
    triton.Config({"BLOCK_C": 32, "BLOCK_P": 32}, num_warps=4),
    triton.Config({"BLOCK_C": 16, "BLOCK_P": 128}, num_warps=8),
    triton.Config({"BLOCK_C": 64, "BLOCK_P": 32}, num_warps=8),
]
# Few, large programs: the interpreter's cost is per program, and one channel
# tile covers AlexNet's 96 channels.
_DEFAULT = triton.Config({"BLOCK_C": 128, "BLOCK_P": 1024}, num_warps=8)
_KEY = ["channels", "pixels", "lo", "hi", "CHANNELS_LAST"]


@triton.jit
def _tile(channels, pixels, CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr,
          BLOCK_P: tl.constexpr):
    """The program's tile: (offset of its image, channel rows [BLOCK_C, 1], pixel
    mask [1, BLOCK_P], element offsets within the image, channel stride).

    Only the image offset is 64-bit: offsets within an image fit in 32 bits
    (checked on the host), which keeps per-element address arithmetic cheap.
    """
    pixel_tiles = tl.cdiv(pixels, BLOCK_P)
    pid = tl.program_id(0)
    n = (pid // pixel_tiles).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    cols = (pid % pixel_tiles) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    if CHANNELS_LAST:
        stride_c = 1
        offsets = rows + cols * channels
    else:
        stride_c = pixels
        offsets = rows * pixels + cols
    return n * channels * pixels, rows, cols < pixels, offsets, stride_c


@triton.jit
def _load_rows(ptr, rows, shift, col_mask, offsets, channels, stride_c):
    """Channel rows `rows + shift` of the tile's pixels in fp32, zero outside [0, channels)."""
    mask = (rows + shift >= 0) & (rows + shift < channels) & col_mask
    values = tl.load(ptr + offsets + shift * stride_c, mask=mask, other=0.0)
    return values.to(tl.float32)


@triton.jit
def _scale(x_ptr, rows, shift, col_mask, offsets, channels, stride_c, lo, window,
           alpha_over_size, k, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """S = k + alpha/size * sum of x^2 over the window of channel rows `rows + shift`,
    i.e. channels [rows + shift - lo, rows + shift - lo + window)."""
    total = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for d in range(window):
        v = _load_rows(x_ptr, rows, shift - lo + d, col_mask, offsets, channels, stride_c)
        total += v * v
    return k + alpha_over_size * total


@triton.jit
def _pow(base, exponent):
    # libdevice's pow is unavailable in the interpreter; S > 0 wherever it matters.
    return tl.exp2(exponent * tl.log2(base))


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=_KEY)
@triton.jit
def lrn_forward_kernel(x_ptr, y_ptr, channels, pixels, lo, hi, alpha_over_size, neg_beta, k,
                       CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_P: tl.constexpr):
    """y = x * S^-beta on one tile; the window of channel c is [c - lo, c + hi]."""
    image, rows, col_mask, offsets, stride_c = _tile(
        channels, pixels, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    x_ptr += image
    y_ptr += image
    x = _load_rows(x_ptr, rows, 0, col_mask, offsets, channels, stride_c)
    s = _scale(x_ptr, rows, 0, col_mask, offsets, channels, stride_c, lo, lo + hi + 1,
               alpha_over_size, k, BLOCK_C, BLOCK_P)
    y = x * _pow(s, neg_beta)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=(rows < channels) & col_mask)


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=_KEY)
@triton.jit
def lrn_backward_kernel(grad_y_ptr, x_ptr, y_ptr, grad_x_ptr, channels, pixels, lo, hi,
                        alpha_over_size, neg_beta, k, grad_coef,
                        CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_P: tl.constexpr):
    """grad_x[c] = g[c] * S[c]^-beta - grad_coef * x[c] * sum_j g[j] * y[j] / S[j]
    over the channels j whose window contains c, i.e. j in [c - hi, c + lo]."""
    image, rows, col_mask, offsets, stride_c = _tile(
        channels, pixels, CHANNELS_LAST, BLOCK_C, BLOCK_P)
    grad_y_ptr += image
    x_ptr += image
    y_ptr += image
    grad_x_ptr += image
    window = lo + hi + 1
    terms = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for e in range(window):
        shift = e - hi
        g_j = _load_rows(grad_y_ptr, rows, shift, col_mask, offsets, channels, stride_c)
        y_j = _load_rows(y_ptr, rows, shift, col_mask, offsets, channels, stride_c)
        s_j = _scale(x_ptr, rows, shift, col_mask, offsets, channels, stride_c, lo, window,
                     alpha_over_size, k, BLOCK_C, BLOCK_P)
        # Rows outside the channels have S = k, which may be 0.
        inside = (rows + shift >= 0) & (rows + shift < channels)
        terms += tl.where(inside, g_j * y_j / s_j, 0.0)
    g = _load_rows(grad_y_ptr, rows, 0, col_mask, offsets, channels, stride_c)
    x = _load_rows(x_ptr, rows, 0, col_mask, offsets, channels, stride_c)
    s = _scale(x_ptr, rows, 0, col_mask, offsets, channels, stride_c, lo, window,
               alpha_over_size, k, BLOCK_C, BLOCK_P)
    # x * (grad_coef * terms): grad_coef * x underflows for a subnormal x (0 * inf = NaN).
    grad = g * _pow(s, neg_beta) - x * (grad_coef * terms)
    tl.store(grad_x_ptr + offsets, grad.to(grad_x_ptr.dtype.element_ty),
             mask=(rows < channels) & col_mask)


def _check_dtype(x: torch.Tensor) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"lrn: backend='triton' supports float32, float16 and bfloat16, "
                        f"got {x.dtype}")


class _Launch:
    """The layout, extents and scalar arguments shared by the forward and backward launches."""

    def __init__(self, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> None:
        _check_dtype(x)
        self.memory_format = output_memory_format(x)
        self.batch, self.channels = x.shape[0], x.shape[1]
        self.pixels = math.prod(x.shape[2:])
        if self.channels * self.pixels >= 2**31:
            raise ValueError(f"lrn: backend='triton' indexes within an image in 32 bits; one "
                             f"image of shape {tuple(x.shape[1:])} has 2**31 elements or more")
        # Channels beyond [0, C) are zero: a window wider than C reaches no further.
        reach = max(self.channels - 1, 0)
        self.scalars = dict(lo=min(size // 2, reach), hi=min((size - 1) // 2, reach),
                            alpha_over_size=alpha / size, neg_beta=-beta, k=k)
        self.channels_last = self.memory_format != torch.contiguous_format
        self.output = torch.empty(x.shape, dtype=x.dtype, device=x.device,
                                  memory_format=self.memory_format)

    def grid(self, meta) -> tuple[int, int]:
        return (self.batch * triton.cdiv(self.pixels, meta["BLOCK_P"]),
                triton.cdiv(self.channels, meta["BLOCK_C"]))

    def run(self, kernel, inputs: tuple[torch.Tensor, ...], **extra) -> torch.Tensor:
        """Launches kernel(*inputs, output, ...) with the inputs in the output's layout.

        With beta = 0 LRN is the identity: y = x, and grad_x = grad_y + 0 * x as
        PyTorch computes it (see csrc/lrn.h), whatever the window holds.
        """
        if self.scalars["neg_beta"] == 0.0:
            if len(inputs) == 1:
                return self.output.copy_(inputs[0])
            return torch.add(inputs[0], inputs[1], alpha=0, out=self.output)
        if self.output.numel() > 0:
            dense = [t.contiguous(memory_format=self.memory_format) for t in inputs]
            wrap_triton(kernel)[self.grid](
                *dense, self.output, channels=self.channels, pixels=self.pixels,
                **self.scalars, **extra, CHANNELS_LAST=self.channels_last)
        return self.output


@triton_op("alexnet_kernels::lrn_triton", mutates_args=())
def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """LRN of x (N, C, *) in x's layout (contiguous, or channels_last(_3d) when x is)."""
    return _Launch(x, size, alpha, beta, k).run(lrn_forward_kernel, (x,))


@triton_op("alexnet_kernels::lrn_backward_triton", mutates_args=())
def lrn_backward(grad_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: int,
                 alpha: float, beta: float, k: float) -> torch.Tensor:
    """grad_x of LRN from (grad_y, x, y = lrn(x)), in x's layout."""
    return _Launch(x, size, alpha, beta, k).run(lrn_backward_kernel, (grad_y, x, y),
                                                grad_coef=2.0 * alpha * beta / size)


_autograd.register(lrn, _autograd.lrn_rules(lrn_backward))


def _aot_kernels() -> list[AotKernel]:
    scalars = {"channels": "i32", "pixels": "i32", "lo": "i32", "hi": "i32",
               "alpha_over_size": "fp32", "neg_beta": "fp32", "k": "fp32"}
    kernels = []
    for kernel, pointers, extra in (
        (lrn_forward_kernel, ("x_ptr", "y_ptr"), {}),
        (lrn_backward_kernel, ("grad_y_ptr", "x_ptr", "y_ptr", "grad_x_ptr"),
         {"grad_coef": "fp32"}),
    ):
        for dtype in ("fp32", "fp16", "bf16"):
            for channels_last in (False, True):
                for config in _CONFIGS:
                    constexprs = {"CHANNELS_LAST": channels_last, **config.kwargs}
                    blocks = ", ".join(f"{name}={value}" for name, value in config.kwargs.items())
                    layout = "channels_last" if channels_last else "contiguous"
                    kernels.append(AotKernel(
                        name=f"{kernel.fn.__name__}[{dtype}, {layout}, {blocks}]",
                        fn=kernel.fn,
                        signature={**{p: f"*{dtype}" for p in pointers}, **scalars, **extra,
                                   **dict.fromkeys(constexprs, "constexpr")},
                        constexprs=constexprs,
                        num_warps=config.num_warps,
                    ))
    return kernels


AOT_KERNELS = _aot_kernels()
