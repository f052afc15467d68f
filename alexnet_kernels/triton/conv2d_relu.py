"""Fused conv2d + bias + ReLU in Triton: implicit GEMMs for the forward and both gradients.

Each kernel is a GEMM whose operand tiles are gathered straight from the
tensors (nothing is unfolded into memory), one group per grid z-slice:

* forward: M = N*OH*OW output pixels, N = Cout/groups, K = (Cin/groups)*KH*KW;
  K is flattened across (c, kh, kw), so conv1 (Cin = 3, 11x11) fills every K
  step instead of wasting most of a per-(kh, kw) step; bias and ReLU are applied
  to the fp32 accumulator before y is written, once;
* grad_x: one GEMM per stride phase (grid z = groups x phases): M = the N*H*W
  input pixels with the same ((ih + pad_h) mod stride_h, (iw + pad_w) mod
  stride_w), N = Cin/groups, K = only the taps that reach that phase
  (``_phase_axis``; at conv1's stride 4 at most 9 of the 121) x Cout/groups,
  the tap outer, so each K step gathers at one tap;
* grad_w: M = Cout/groups, N = (Cin/groups)*KH*KW, K = N*OH*OW, split along K
  into an fp32 workspace that a second pass sums in a fixed order (no atomics,
  deterministic); grad_b is the row sum of the same masked grad_y tiles.

The ReLU mask (zero where y <= 0) is applied to grad_y tiles as they are loaded: no masked
gradient tensor is ever written. Tensors are addressed through their strides, so
contiguous, channels_last and other layouts need no copies; outputs follow x's
layout. Offsets are 32-bit unless a tensor reaches 2^31 elements (``INT64``).

Products go through ``tl.dot`` with the precision PyTorch's convolution would
use: fp16/bf16 operands on tensor cores with fp32 accumulation, fp32 operands
in TF32 iff ``torch.backends.cudnn.allow_tf32`` (else full fp32).
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from alexnet_kernels.ops import _autograd
from alexnet_kernels.ops.layout import output_memory_format
from alexnet_kernels.triton import AotKernel, autotune_configs, interpreting

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# The gathered operand tiles need an index and a mask per element on top of the
# fp32 accumulator: at 4 warps every tile larger than 64x64 spills on sm_80 or
# sm_90 (scripts/triton_aot_report.py), so the large tiles take 8 warps. Three
# stages overlap the gathered loads of the next K steps with the current dot.
_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
]
# Few, large programs: the interpreter's cost is per program and per K step.
_DEFAULT = triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128}, num_warps=8)
# grad_w's K splits start at multiples of this (the largest BLOCK_K), so only a
# split's last step is partial.
_SPLIT_ALIGN = 64
# grad_w is split along K until about this many programs run (two waves on a
# 132-SM H100), but no split is shorter than _MIN_SPLIT_K.
_TARGET_PROGRAMS = 264
_MIN_SPLIT_K = 2048
# Tensors reaching this many elements are indexed in 64 bits.
_INT32_LIMIT = 2**31

# Autotuning key: the problem's extents, and x's channel stride (1 for channels_last).
_KEY = ["batch", "in_h", "in_w", "out_h", "out_w", "in_per_group", "out_per_group", "KH", "KW",
        "sx_c"]


@triton.jit
def _arange(BLOCK: tl.constexpr, INT64: tl.constexpr):
    """[0, BLOCK), in 64 bits when INT64: every index and offset derived from it is then too."""
    offsets = tl.arange(0, BLOCK)
    if INT64:
        offsets = offsets.to(tl.int64)
    return offsets


@triton.jit
def _widen(index, INT64: tl.constexpr):
    """A program id in 64 bits when INT64, before it is scaled by a block size."""
    if INT64:
        index = index.to(tl.int64)
    return index


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr):
    """acc + a @ b in fp32. DOT_IN_FP32 upcasts the operands first (exact): Triton's
    interpreter multiplies bf16 operands as their raw bits."""
    if DOT_IN_FP32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=tl.float32)


@triton.jit
def _masked_grad(grad_y_ptr, y_ptr, offsets, mask):
    """grad_y except where y <= 0 (the ReLU's gradient), in grad_y's dtype; a NaN y passes
    its gradient, as PyTorch's ReLU backward (threshold_backward) does."""
    grad = tl.load(grad_y_ptr + offsets, mask=mask, other=0.0)
    y = tl.load(y_ptr + offsets, mask=mask, other=0.0)
    return tl.where(y <= 0, tl.zeros_like(grad), grad)


@triton.jit
def _unravel_pixels(m, height, width):
    """(image, row, column) of flat pixel indices m into (N, height, width)."""
    pixels = height * width
    p = m % pixels
    return m // pixels, p // width, p % width


@triton.jit
def _unravel_taps(k, KH: tl.constexpr, KW: tl.constexpr):
    """(channel, kh, kw) of flat (c, kh, kw) indices k of a weight's KH x KW planes."""
    r = k % (KH * KW)
    return k // (KH * KW), r // KW, r % KW


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=_KEY)
@triton.jit
def conv2d_relu_forward_kernel(
        x_ptr, w_ptr, bias_ptr, y_ptr,
        batch, in_h, in_w, out_h, out_w, in_per_group, out_per_group,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        sx_n, sx_c, sx_h, sx_w, sw_o, sw_c, sw_h, sw_w, sy_n, sy_c, sy_h, sy_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
        DOT_IN_FP32: tl.constexpr, INT64: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y = relu(conv(x, w) + bias) for BLOCK_M output pixels x BLOCK_N output channels
    of group program_id(2)."""
    group = tl.program_id(2)
    m = _widen(tl.program_id(0), INT64) * BLOCK_M + _arange(BLOCK_M, INT64)
    co = group * out_per_group + tl.program_id(1) * BLOCK_N + _arange(BLOCK_N, INT64)
    co_mask = co < (group + 1) * out_per_group
    n, oh, ow = _unravel_pixels(m, out_h, out_w)
    m_mask = n < batch
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    x_rows = x_ptr + n * sx_n + group * in_per_group * sx_c
    w_cols = w_ptr + co * sw_o
    taps = in_per_group * KH * KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, taps, BLOCK_K):
        k = k0 + _arange(BLOCK_K, INT64)
        k_mask = k < taps
        c, kh, kw = _unravel_taps(k, KH, KW)
        ih = ih0[:, None] + (kh * dil_h)[None, :]
        iw = iw0[:, None] + (kw * dil_w)[None, :]
        a_mask = (m_mask[:, None] & k_mask[None, :] & (ih >= 0) & (ih < in_h) & (iw >= 0)
                  & (iw < in_w))
        a = tl.load(x_rows[:, None] + (c * sx_c)[None, :] + ih * sx_h + iw * sx_w,
                    mask=a_mask, other=0.0)
        b = tl.load(w_cols[None, :] + (c * sw_c + kh * sw_h + kw * sw_w)[:, None],
                    mask=k_mask[:, None] & co_mask[None, :], other=0.0)
        acc = _dot(a, b, acc, PRECISION, DOT_IN_FP32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + co, mask=co_mask, other=0.0).to(tl.float32)[None, :]
    # NaN passes through, as in torch.relu.
    acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
    y_offsets = (n * sy_n + oh * sy_h + ow * sy_w)[:, None] + (co * sy_c)[None, :]
    tl.store(y_ptr + y_offsets, acc.to(y_ptr.dtype.element_ty),
             mask=m_mask[:, None] & co_mask[None, :])


@triton.jit
def _phase_axis(phase, size, kernel, stride, pad, dilation):
    """One axis of a grad_x stride phase (the CUDA kernels' PhaseAxis): input i meets
    tap k through output o when i + pad = o * stride + k * dilation, so the phase's
    inputs first + t * stride meet only the taps tap0 + a * tap_step (none unless
    gcd(dilation, stride) divides the phase), tap a of input t reaching output
    out_base + t - a * out_step. Returns (first, count, tap0, tap_step, taps,
    out_base, out_step); every operand of % and // is non-negative or an exact multiple."""
    first = (phase - pad % stride + stride) % stride
    count = tl.where(first < size, (size - first + stride - 1) // stride, 0)
    g = dilation
    r = stride
    while r != 0:
        g, r = r, g % r
    tap_step = stride // g
    tap0 = 0
    while tap0 < tap_step and (tap0 * dilation + stride - phase) % stride != 0:
        tap0 += 1
    taps = tl.where((tap0 < tap_step) & (tap0 < kernel),
                    (kernel - tap0 + tap_step - 1) // tap_step, 0)
    out_base = (first + pad - tap0 * dilation) // stride
    return first, count, tap0, tap_step, taps, out_base, dilation // g


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=_KEY)
@triton.jit
def conv2d_relu_grad_x_kernel(
        grad_y_ptr, y_ptr, w_ptr, grad_x_ptr,
        batch, in_h, in_w, out_h, out_w, in_per_group, out_per_group,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        sy_n, sy_c, sy_h, sy_w, sw_o, sw_c, sw_h, sw_w, sx_n, sx_c, sx_h, sx_w,
        KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr,
        DOT_IN_FP32: tl.constexpr, INT64: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """grad_x for BLOCK_M input pixels of one stride phase x BLOCK_N input channels;
    program_id(2) = phase * groups + group. The sum over (co, phase tap) of masked
    grad_y at the output pixel the tap connects, times w[co, c, kh, kw]. grad_y and y
    share the strides sy_*."""
    groups = tl.num_programs(2) // (stride_h * stride_w)
    group = tl.program_id(2) % groups
    phase = tl.program_id(2) // groups
    first_h, count_h, tap0_h, step_h, taps_h, base_h, back_h = _phase_axis(
        phase // stride_w, in_h, KH, stride_h, pad_h, dil_h)
    first_w, count_w, tap0_w, step_w, taps_w, base_w, back_w = _phase_axis(
        phase % stride_w, in_w, KW, stride_w, pad_w, dil_w)
    m = _widen(tl.program_id(0), INT64) * BLOCK_M + _arange(BLOCK_M, INT64)
    ci = tl.program_id(1) * BLOCK_N + _arange(BLOCK_N, INT64)
    ci_mask = ci < in_per_group
    # max(.., 1): a phase without pixels has only masked-off rows.
    n, th, tw = _unravel_pixels(m, tl.maximum(count_h, 1), tl.maximum(count_w, 1))
    m_mask = (n < batch) & (count_h > 0) & (count_w > 0)
    oh0 = base_h + th
    ow0 = base_w + tw
    g_rows = n * sy_n + group * out_per_group * sy_c
    w_cols = (w_ptr + group * out_per_group * sw_o + ci * sw_c + tap0_h * sw_h
              + tap0_w * sw_w)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # K = (phase tap, output channel) in steps of BLOCK_K channels at one tap: the
    # tap is a scalar per step, so the gathered indices need no per-element
    # division. One flat loop, which the software pipeliner overlaps as a whole.
    co_steps = tl.cdiv(out_per_group, BLOCK_K)
    for step in range(0, taps_h * taps_w * co_steps):
        tap = step // co_steps
        a_tap = tap // taps_w
        b_tap = tap % taps_w
        oh = oh0 - a_tap * back_h
        ow = ow0 - b_tap * back_w
        co = (step % co_steps) * BLOCK_K + _arange(BLOCK_K, INT64)
        co_mask = co < out_per_group
        a_mask = (m_mask & (oh >= 0) & (oh < out_h) & (ow >= 0) & (ow < out_w))[:, None] & \
            co_mask[None, :]
        a = _masked_grad(grad_y_ptr, y_ptr,
                         (g_rows + oh * sy_h + ow * sy_w)[:, None] + (co * sy_c)[None, :],
                         a_mask)
        b = tl.load(w_cols[None, :] + (co * sw_o + a_tap * step_h * sw_h
                                       + b_tap * step_w * sw_w)[:, None],
                    mask=co_mask[:, None] & ci_mask[None, :], other=0.0)
        acc = _dot(a, b, acc, PRECISION, DOT_IN_FP32)
    ih = first_h + th * stride_h
    iw = first_w + tw * stride_w
    x_offsets = ((n * sx_n + ih * sx_h + iw * sx_w)[:, None]
                 + ((group * in_per_group + ci) * sx_c)[None, :])
    tl.store(grad_x_ptr + x_offsets, acc.to(grad_x_ptr.dtype.element_ty),
             mask=m_mask[:, None] & ci_mask[None, :])


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=[*_KEY, "k_per_split"])
@triton.jit
def conv2d_relu_grad_w_kernel(
        grad_y_ptr, y_ptr, x_ptr, grad_w_ptr, grad_b_ptr,
        batch, in_h, in_w, out_h, out_w, in_per_group, out_per_group,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, k_per_split, splits,
        sy_n, sy_c, sy_h, sy_w, sx_n, sx_c, sx_h, sx_w,
        KH: tl.constexpr, KW: tl.constexpr, COMPUTE_W: tl.constexpr,
        COMPUTE_B: tl.constexpr, PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
        INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr):
    """Partial grad_w (and grad_b) of BLOCK_M output channels x BLOCK_N (c, kh, kw) columns
    of one group, summed over output pixels [split * k_per_split, (split + 1) * k_per_split).

    program_id(2) = group * splits + split. The partial sums go to the fp32
    workspaces grad_w_ptr (splits, Cout, in_per_group * KH * KW) and grad_b_ptr
    (splits, Cout), each element written by exactly one program.
    """
    group = tl.program_id(2) // splits
    split = tl.program_id(2) % splits
    co = group * out_per_group + tl.program_id(0) * BLOCK_M + _arange(BLOCK_M, INT64)
    j = tl.program_id(1) * BLOCK_N + _arange(BLOCK_N, INT64)
    co_mask = co < (group + 1) * out_per_group
    columns = in_per_group * KH * KW
    j_mask = j < columns
    c, kh, kw = _unravel_taps(j, KH, KW)
    x_cols = x_ptr + (group * in_per_group + c) * sx_c
    split = _widen(split, INT64)
    k_end = (split + 1) * k_per_split
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(split * k_per_split, k_end, BLOCK_K):
        k = k0 + _arange(BLOCK_K, INT64)
        n, oh, ow = _unravel_pixels(k, out_h, out_w)
        # The last split ends past the last image.
        k_mask = (k < k_end) & (n < batch)
        a = _masked_grad(grad_y_ptr, y_ptr,
                         (co * sy_c)[:, None] + (n * sy_n + oh * sy_h + ow * sy_w)[None, :],
                         co_mask[:, None] & k_mask[None, :])
        if COMPUTE_B:
            bias_acc += tl.sum(a.to(tl.float32), axis=1)
        if COMPUTE_W:
            ih = (oh * stride_h - pad_h)[:, None] + (kh * dil_h)[None, :]
            iw = (ow * stride_w - pad_w)[:, None] + (kw * dil_w)[None, :]
            b_mask = (k_mask[:, None] & j_mask[None, :] & (ih >= 0) & (ih < in_h) & (iw >= 0)
                      & (iw < in_w))
            b = tl.load(x_cols[None, :] + (n * sx_n)[:, None] + ih * sx_h + iw * sx_w,
                        mask=b_mask, other=0.0)
            acc = _dot(a, b, acc, PRECISION, DOT_IN_FP32)
    out_channels = out_per_group * (tl.num_programs(2) // splits)
    if COMPUTE_W:
        w_offsets = (split * out_channels + co)[:, None] * columns + j[None, :]
        tl.store(grad_w_ptr + w_offsets, acc, mask=co_mask[:, None] & j_mask[None, :])
    if COMPUTE_B:
        # Column tiles other than the first computed the same sums.
        tl.store(grad_b_ptr + split * out_channels + co, bias_acc,
                 mask=co_mask & (tl.program_id(1) == 0))


# ---- host side ------------------------------------------------------------------


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision for operands of `dtype`, as PyTorch's convolution:
    fp32 in TF32 iff torch.backends.cudnn.allow_tf32; half types use tensor cores anyway."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def _max_offset(t: torch.Tensor) -> int:
    return sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Extents and hyper-parameters of one convolution, as the kernels take them."""

    batch: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    in_per_group: int
    out_per_group: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def of(cls, x: torch.Tensor, weight: torch.Tensor, stride: list[int], padding: list[int],
           dilation: list[int], groups: int) -> _Geometry:
        if x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"conv2d_relu: backend='triton' supports float32, float16 and "
                            f"bfloat16, got {x.dtype}")
        batch, channels, in_h, in_w = x.shape
        out_channels, _, kh, kw = weight.shape
        out_h, out_w = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip((in_h, in_w), (kh, kw), stride, padding, dilation,
                                        strict=True))
        return cls(batch, in_h, in_w, out_h, out_w, channels // groups, out_channels // groups,
                   groups, (kh, kw), tuple(stride), tuple(padding), tuple(dilation))

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_per_group * self.groups, self.out_h, self.out_w)

    def arguments(self) -> tuple[int, ...]:
        """The scalars every kernel takes first: batch, in_h, in_w, out_h, out_w,
        in_per_group, out_per_group, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w."""
        return (self.batch, self.in_h, self.in_w, self.out_h, self.out_w, self.in_per_group,
                self.out_per_group, *self.stride, *self.padding, *self.dilation)

    def constexprs(self, *tensors: torch.Tensor) -> dict:
        """Kernel size, dot precision and index width for a launch on `tensors` (x first)."""
        dtype = tensors[0].dtype
        return dict(KH=self.kernel[0], KW=self.kernel[1], PRECISION=dot_precision(dtype),
                    DOT_IN_FP32=interpreting() and dtype == torch.bfloat16,
                    INT64=max(_max_offset(t) for t in tensors) + 1 >= _INT32_LIMIT
                    or self.batch * max(self.in_h * self.in_w, self.out_h * self.out_w)
                    >= _INT32_LIMIT)

    def split_k(self, row_tiles: int, column_tiles: int) -> tuple[int, int]:
        """(splits, output pixels per split) of grad_w's K = N*OH*OW."""
        pixels = self.batch * self.out_h * self.out_w
        wanted = triton.cdiv(_TARGET_PROGRAMS, row_tiles * column_tiles * self.groups)
        splits = max(1, min(wanted, pixels // _MIN_SPLIT_K))
        per_split = triton.cdiv(triton.cdiv(pixels, splits), _SPLIT_ALIGN) * _SPLIT_ALIGN
        return triton.cdiv(pixels, per_split), per_split


# Tiles assumed when choosing grad_w's split count (the split must be known
# before the autotuner picks a config, to size the workspace).
_SPLIT_TILE = 64


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             geometry: _Geometry) -> torch.Tensor:
    y = torch.empty(geometry.output_shape, dtype=x.dtype, device=x.device,
                    memory_format=output_memory_format(x))
    if y.numel() == 0:
        return y

    def grid(meta):
        return (triton.cdiv(geometry.batch * geometry.out_h * geometry.out_w, meta["BLOCK_M"]),
                triton.cdiv(geometry.out_per_group, meta["BLOCK_N"]), geometry.groups)

    wrap_triton(conv2d_relu_forward_kernel)[grid](
        x, weight, weight if bias is None else bias.contiguous(), y, *geometry.arguments(),
        *x.stride(), *weight.stride(), *y.stride(), HAS_BIAS=bias is not None,
        **geometry.constexprs(x, weight, y))
    return y


def _grad_x(grad_y: torch.Tensor, y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
            geometry: _Geometry) -> torch.Tensor:
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device,
                         memory_format=output_memory_format(x))
    if grad_x.numel() == 0:
        return grad_x

    stride_h, stride_w = geometry.stride
    # Each phase's pixels, along each axis: at most ceil(size / stride).
    most_pixels = triton.cdiv(geometry.in_h, stride_h) * triton.cdiv(geometry.in_w, stride_w)

    def grid(meta):
        return (triton.cdiv(geometry.batch * most_pixels, meta["BLOCK_M"]),
                triton.cdiv(geometry.in_per_group, meta["BLOCK_N"]),
                geometry.groups * stride_h * stride_w)

    wrap_triton(conv2d_relu_grad_x_kernel)[grid](
        grad_y, y, weight, grad_x, *geometry.arguments(), *y.stride(), *weight.stride(),
        *grad_x.stride(), **geometry.constexprs(grad_x, grad_y, weight))
    return grad_x


def _grad_weight_and_bias(grad_y: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                          weight: torch.Tensor, geometry: _Geometry, compute_w: bool,
                          compute_b: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_w, grad_b) in x's dtype, each empty when not computed."""
    out_channels = geometry.out_per_group * geometry.groups
    columns = geometry.in_per_group * geometry.kernel[0] * geometry.kernel[1]
    fp32 = dict(dtype=torch.float32, device=x.device)
    if geometry.batch * geometry.out_h * geometry.out_w == 0:
        splits = 0
        grad_w32, grad_b32 = torch.zeros(0, out_channels, columns, **fp32), torch.zeros(
            0, out_channels, **fp32)
    else:
        column_tiles = triton.cdiv(columns, _SPLIT_TILE) if compute_w else 1
        splits, per_split = geometry.split_k(triton.cdiv(geometry.out_per_group, _SPLIT_TILE),
                                             column_tiles)
        grad_w32 = torch.empty(splits if compute_w else 0, out_channels, columns, **fp32)
        grad_b32 = torch.empty(splits if compute_b else 0, out_channels, **fp32)

        def grid(meta):
            return (triton.cdiv(geometry.out_per_group, meta["BLOCK_M"]),
                    triton.cdiv(columns, meta["BLOCK_N"]) if compute_w else 1,
                    geometry.groups * splits)

        wrap_triton(conv2d_relu_grad_w_kernel)[grid](
            grad_y, y, x, grad_w32, grad_b32, *geometry.arguments(), per_split, splits,
            *y.stride(), *x.stride(), COMPUTE_W=compute_w, COMPUTE_B=compute_b,
            **geometry.constexprs(x, grad_y))
    grad_w = x.new_empty(0)
    if compute_w:
        # The second, deterministic pass: the splits summed in order.
        grad_w = grad_w32.sum(0).view(weight.shape).to(x.dtype).contiguous(
            memory_format=output_memory_format(x))
    grad_b = grad_b32.sum(0).to(x.dtype) if compute_b else x.new_empty(0)
    return grad_w, grad_b


@triton_op("alexnet_kernels::conv2d_relu_triton", mutates_args=())
def conv2d_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: list[int], padding: list[int], dilation: list[int],
                groups: int) -> torch.Tensor:
    """relu(conv2d(x, weight, bias)) of a 4-D x (N, Cin, H, W), in x's layout."""
    geometry = _Geometry.of(x, weight, stride, padding, dilation, groups)
    return _forward(x, weight, bias, geometry)


@triton_op("alexnet_kernels::conv2d_relu_backward_triton", mutates_args=())
def conv2d_relu_backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                         y: torch.Tensor, stride: list[int], padding: list[int],
                         dilation: list[int], groups: int,
                         output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor]:
    """(grad_x, grad_w, grad_b) from y = conv2d_relu(x, weight, ...) and grad_y; a
    gradient output_mask does not ask for is an empty tensor and is not computed."""
    geometry = _Geometry.of(x, weight, stride, padding, dilation, groups)
    if tuple(grad_y.shape) != geometry.output_shape or y.shape != grad_y.shape:
        raise ValueError(f"conv2d_relu_backward: grad_y and y must have the output shape "
                         f"{geometry.output_shape}, got {tuple(grad_y.shape)} and "
                         f"{tuple(y.shape)}")
    if grad_y.stride() != y.stride():
        # The kernels address grad_y and y with one set of strides.
        grad_y = torch.empty_like(y).copy_(grad_y)
    grad_x = (_grad_x(grad_y, y, x, weight, geometry) if output_mask[0] else x.new_empty(0))
    grad_w, grad_b = (x.new_empty(0), x.new_empty(0))
    if output_mask[1] or output_mask[2]:
        grad_w, grad_b = _grad_weight_and_bias(grad_y, y, x, weight, geometry, output_mask[1],
                                               output_mask[2])
    return grad_x, grad_w, grad_b


_autograd.register(conv2d_relu, _autograd.conv2d_relu_rules(conv2d_relu_backward))


# ---- ahead-of-time records ------------------------------------------------------
# A 3x3 kernel (conv3-5 of AlexNet); other kernel sizes compile the same code with
# other unravelling constants.
_AOT_KERNEL_SIZE = {"KH": 3, "KW": 3}


def _aot_kernels() -> list[AotKernel]:
    specs = (
        (conv2d_relu_forward_kernel, ("x_ptr", "w_ptr", "bias_ptr", "y_ptr"), {},
         {"HAS_BIAS": True}),
        (conv2d_relu_grad_x_kernel, ("grad_y_ptr", "y_ptr", "w_ptr", "grad_x_ptr"), {}, {}),
        (conv2d_relu_grad_w_kernel, ("grad_y_ptr", "y_ptr", "x_ptr"),
         {"grad_w_ptr": "*fp32", "grad_b_ptr": "*fp32"}, {"COMPUTE_W": True, "COMPUTE_B": True}),
    )
    kernels = []
    for kernel, pointers, workspaces, flags in specs:
        for dtype, precision in (("fp32", "tf32"), ("fp16", "ieee"), ("bf16", "ieee")):
            for config in _CONFIGS:
                constexprs = {**_AOT_KERNEL_SIZE, **flags, "PRECISION": precision,
                              "DOT_IN_FP32": False, "INT64": False, **config.kwargs}
                # Pointers in the kernel's dtype, fp32 workspaces, every other scalar i32.
                types = {**dict.fromkeys(pointers, f"*{dtype}"), **workspaces,
                         **dict.fromkeys(constexprs, "constexpr")}
                signature = {arg: types.get(arg, "i32") for arg in kernel.fn.arg_names}
                blocks = "x".join(str(v) for v in config.kwargs.values())
                kernels.append(AotKernel(
                    name=f"{kernel.fn.__name__}[{dtype}, {blocks}]",
                    fn=kernel.fn,
                    signature=signature,
                    constexprs=constexprs,
                    num_warps=config.num_warps,
                    num_stages=config.num_stages,
                    tensor_cores=True,
                ))
    return kernels


AOT_KERNELS = _aot_kernels()
