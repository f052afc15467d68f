"""2-D max pooling in Triton, with the semantics and argmax of the compiled kernels.

Forward: a program handles a 2-D tile of outputs: BLOCK // BLOCK_C rows of
BLOCK_C columns, where a row is an (image, channel, oh) output row and a
column an ow for NCHW, and a row is an (image, oh, ow) pixel and a column a
channel for NHWC. Rows are split into their coordinates once per row and
columns need no split, so no lane divides per element. Each lane walks its
window with the
rules of ``csrc/kernels/max_pool.cuh``: the running max starts at -inf with the
argmax at the window's first position inside the input, a larger value or a
NaN takes over. Besides y it stores the window offset ``kh * KW + kw`` of the
maximum (uint8 or int32 as ``PoolGeometry.argmax_dtype`` says), so the
backward, ``return_indices`` and autograd bookkeeping are shared with the
native op.

Backward: a program handles a tile of inputs the same way; each lane gathers grad_y from
the windows that cover it and whose argmax it is, in (oh, ow) order. Every
grad_x element is written once, with no atomics: deterministic.

Values are compared in fp32 (half types upcast first), and y stores the maximum
converted back, which is exact. Indexing is 32-bit unless a tensor has 2^31
elements or more (the ``INT64`` constexpr), since 64-bit division is slow on GPUs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from alexnet_kernels.ops import _autograd
from alexnet_kernels.ops._args import PoolGeometry
from alexnet_kernels.ops.layout import output_memory_format
from alexnet_kernels.triton import AotKernel, autotune_configs

# 2 or 4 outputs per thread: at 8 the index arithmetic of the unrolled window
# takes about 150 registers.
_CONFIGS = [
    triton.Config({"BLOCK": 256}, num_warps=4),
    triton.Config({"BLOCK": 512}, num_warps=4),
    triton.Config({"BLOCK": 1024}, num_warps=8),
]
# One large block: the interpreter's cost is per program.
_DEFAULT = triton.Config({"BLOCK": 8192}, num_warps=8)
# Tile columns at most (a power of two, at most the smallest BLOCK).
_MAX_BLOCK_C = 128
# Tensors with at least this many elements are indexed in 64 bits.
_INT32_LIMIT = 2**31
# Windows (forward) or covering-output ranges (backward) with more positions
# than this loop at run time instead of being unrolled.
_MAX_UNROLLED_TAPS = tl.constexpr(64)

_SHAPE_KEY = ["numel", "channels", "in_h", "in_w", "out_h", "out_w", "KH", "KW",
              "CHANNELS_LAST", "INT64"]


@triton.jit
def _tile(rows, cols, INT64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile: its rows (BLOCK // BLOCK_C, axis 0 of the grid), columns
    (BLOCK_C, axis 1) and the tile's in-bounds mask."""
    if INT64:
        r = (tl.program_id(0).to(tl.int64) * (BLOCK // BLOCK_C)
             + tl.arange(0, BLOCK // BLOCK_C).to(tl.int64))
    else:
        r = tl.program_id(0) * (BLOCK // BLOCK_C) + tl.arange(0, BLOCK // BLOCK_C)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return r[:, None], c[None, :], (r < rows)[:, None] & (c < cols)[None, :]


@triton.jit
def _rows_cols(numel, channels, width, CHANNELS_LAST: tl.constexpr):
    """Rows and columns of the tiling of a tensor of numel elements."""
    cols = channels if CHANNELS_LAST else width
    return numel // cols, cols


@triton.jit
def _unravel(r, c, channels, height, width, other_plane, CHANNELS_LAST: tl.constexpr):
    """(h, w) of tile rows r and columns c of an (N, C, height, width) tensor (rows of
    width elements, or pixels of channels elements), where the same image and channel
    start in the other tensor of the pair (planes of other_plane pixels), and the
    distance between its neighbouring pixels. Divides once per row, not per element."""
    if CHANNELS_LAST:
        w = r % width
        rest = r // width
        h = rest % height
        base = (rest // height) * other_plane * channels + c
        pixel_stride = channels
    else:
        w = c
        h = r % height
        base = (r // height) * other_plane
        pixel_stride = 1
    return h, w, base, pixel_stride


@triton.jit
def _window_tap(x_ptr, best, best_tap, base, pixel_stride, in_h, in_w, row0, col0, mask,
                kh, kw, dilation_h, dilation_w, KW: tl.constexpr):
    ih = row0 + kh * dilation_h
    iw = col0 + kw * dilation_w
    inside = mask & (ih >= 0) & (ih < in_h) & (iw >= 0) & (iw < in_w)
    v = tl.load(x_ptr + base + (ih * in_w + iw) * pixel_stride, mask=inside,
                other=-float("inf")).to(tl.float32)
    # First maximum in window order wins ties; a NaN always takes over.
    # Positions outside the input read -inf, which never takes over.
    take = (v > best) | (v != v)
    return tl.where(take, v, best), tl.where(take, kh * KW + kw, best_tap)


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=_SHAPE_KEY)
@triton.jit
def max_pool_forward_kernel(x_ptr, y_ptr, argmax_ptr, numel, channels, in_h, in_w, out_h, out_w,
                            stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                            KH: tl.constexpr, KW: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                            INT64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
    """y and the window offset of the maximum for this program's tile of outputs."""
    rows, cols = _rows_cols(numel, channels, out_w, CHANNELS_LAST)
    r, c, mask = _tile(rows, cols, INT64, BLOCK, BLOCK_C)
    offsets = r * cols + c
    # Input element (n, ih, iw, c) lies at base + (ih * in_w + iw) * pixel_stride.
    oh, ow, base, pixel_stride = _unravel(r, c, channels, out_h, out_w, in_h * in_w,
                                          CHANNELS_LAST)
    row0 = oh * stride_h - pad_h
    col0 = ow * stride_w - pad_w
    # As in PyTorch, the argmax starts at the window's first position inside the
    # input, so all -inf windows pick the same element.
    kh_first = tl.where(row0 >= 0, 0, (dilation_h - 1 - row0) // dilation_h)
    kw_first = tl.where(col0 >= 0, 0, (dilation_w - 1 - col0) // dilation_w)
    best = tl.full((BLOCK // BLOCK_C, BLOCK_C), -float("inf"), tl.float32)
    best_tap = (kh_first * KW + kw_first + tl.zeros_like(best).to(tl.int32)).to(tl.int32)
    if KH * KW <= _MAX_UNROLLED_TAPS:
        for kh in tl.static_range(KH):
            for kw in tl.static_range(KW):
                best, best_tap = _window_tap(x_ptr, best, best_tap, base, pixel_stride, in_h,
                                             in_w, row0, col0, mask, kh, kw, dilation_h,
                                             dilation_w, KW)
    else:
        for kh in range(KH):
            for kw in range(KW):
                best, best_tap = _window_tap(x_ptr, best, best_tap, base, pixel_stride, in_h,
                                             in_w, row0, col0, mask, kh, kw, dilation_h,
                                             dilation_w, KW)
    tl.store(y_ptr + offsets, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(argmax_ptr + offsets, best_tap.to(argmax_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _covering_range(i, pad, kernel, stride, dilation, out_size):
    """First and last outputs along one axis whose windows contain input position i."""
    lowest = i + pad - (kernel - 1) * dilation
    first = tl.where(lowest <= 0, 0, (lowest + stride - 1) // stride)
    last = tl.minimum((i + pad) // stride, out_size - 1)
    return first, last


@triton.jit
def _gather_tap(grad_y_ptr, argmax_ptr, acc, out_base, pixel_stride, out_w, i_h, i_w,
                first_h, last_h, first_w, last_w, mask, j_h, j_w, stride_h, stride_w,
                dilation_h, dilation_w, KW: tl.constexpr):
    oh = first_h + j_h
    ow = first_w + j_w
    # Offsets from the windows' starts; only used where oh <= last_h, ow <= last_w,
    # where they are non-negative.
    dh = i_h - oh * stride_h
    dw = i_w - ow * stride_w
    hit = mask & (oh <= last_h) & (ow <= last_w) & (dh % dilation_h == 0) & (dw % dilation_w == 0)
    o = out_base + (oh * out_w + ow) * pixel_stride
    a = tl.load(argmax_ptr + o, mask=hit, other=-1).to(tl.int32)
    hit = hit & (a == (dh // dilation_h) * KW + dw // dilation_w)
    return acc + tl.load(grad_y_ptr + o, mask=hit, other=0.0).to(tl.float32)


@triton.autotune(configs=autotune_configs(_CONFIGS, _DEFAULT), key=_SHAPE_KEY)
@triton.jit
def max_pool_backward_kernel(grad_y_ptr, argmax_ptr, grad_x_ptr, numel, channels, in_h, in_w,
                             out_h, out_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                             dilation_w, KH: tl.constexpr, KW: tl.constexpr,
                             CHANNELS_LAST: tl.constexpr, INT64: tl.constexpr,
                             COVER_H: tl.constexpr, COVER_W: tl.constexpr, BLOCK: tl.constexpr,
                             BLOCK_C: tl.constexpr):
    """grad_x for this program's tile of inputs, gathered from the windows covering them.

    COVER_H x COVER_W bounds the covering outputs of one input (ceil(span / stride)
    per axis), so the loops have a compile-time trip count.
    """
    rows, cols = _rows_cols(numel, channels, in_w, CHANNELS_LAST)
    r, c, mask = _tile(rows, cols, INT64, BLOCK, BLOCK_C)
    offsets = r * cols + c
    ih, iw, out_base, pixel_stride = _unravel(r, c, channels, in_h, in_w, out_h * out_w,
                                              CHANNELS_LAST)
    first_h, last_h = _covering_range(ih, pad_h, KH, stride_h, dilation_h, out_h)
    first_w, last_w = _covering_range(iw, pad_w, KW, stride_w, dilation_w, out_w)
    i_h = ih + pad_h
    i_w = iw + pad_w
    acc = tl.zeros((BLOCK // BLOCK_C, BLOCK_C), tl.float32)
    # Ascending (oh, ow): the summation order of the native kernels.
    if COVER_H * COVER_W <= _MAX_UNROLLED_TAPS:
        for j_h in tl.static_range(COVER_H):
            for j_w in tl.static_range(COVER_W):
                acc = _gather_tap(grad_y_ptr, argmax_ptr, acc, out_base, pixel_stride, out_w, i_h,
                                  i_w, first_h, last_h, first_w, last_w, mask, j_h, j_w,
                                  stride_h, stride_w, dilation_h, dilation_w, KW)
    else:
        for j_h in range(COVER_H):
            for j_w in range(COVER_W):
                acc = _gather_tap(grad_y_ptr, argmax_ptr, acc, out_base, pixel_stride, out_w, i_h,
                                  i_w, first_h, last_h, first_w, last_w, mask, j_h, j_w,
                                  stride_h, stride_w, dilation_h, dilation_w, KW)
    tl.store(grad_x_ptr + offsets, acc.to(grad_x_ptr.dtype.element_ty), mask=mask)


def _covering_count(kernel: int, stride: int, dilation: int) -> int:
    """The most outputs along one axis whose windows contain one input position."""
    return triton.cdiv((kernel - 1) * dilation + 1, stride)


def _launch(kernel, tensors: tuple, geometry: PoolGeometry, numel: int, width: int,
            channels_last: bool, **constexprs) -> None:
    n, c, in_h, in_w = geometry.input_shape
    _, _, out_h, out_w = geometry.output_shape
    int64 = max(n * c * in_h * in_w, n * c * out_h * out_w) >= _INT32_LIMIT

    # Tile columns: channels (NHWC) or the row's width (NCHW) of the tensor the
    # kernel writes, numel elements.
    cols = c if channels_last else width
    block_c = min(triton.next_power_of_2(cols), _MAX_BLOCK_C)

    def grid(meta):
        return (triton.cdiv(numel // cols, meta["BLOCK"] // block_c), triton.cdiv(cols, block_c))

    wrap_triton(kernel)[grid](
        *tensors, numel, c, in_h, in_w, out_h, out_w, *geometry.stride, *geometry.padding,
        *geometry.dilation, KH=geometry.kernel[0], KW=geometry.kernel[1],
        CHANNELS_LAST=channels_last, INT64=int64, BLOCK_C=block_c, **constexprs)


@triton_op("alexnet_kernels::max_pool2d_triton", mutates_args=())
def max_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               dilation: list[int], ceil_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, argmax) of a 4-D x, as ``alexnet_kernels::max_pool2d`` returns them."""
    geometry = PoolGeometry(x.shape, kernel_size, stride, padding, dilation,
                                         ceil_mode)
    layout = output_memory_format(x)
    y = torch.empty(geometry.output_shape, dtype=x.dtype, device=x.device, memory_format=layout)
    argmax = torch.empty(geometry.output_shape, dtype=geometry.argmax_dtype, device=x.device,
                         memory_format=layout)
    if y.numel() > 0:
        _launch(max_pool_forward_kernel, (x.contiguous(memory_format=layout), y, argmax),
                geometry, y.numel(), geometry.output_shape[3], layout == torch.channels_last)
    return y, argmax


@triton_op("alexnet_kernels::max_pool2d_backward_triton", mutates_args=())
def max_pool2d_backward(grad_y: torch.Tensor, argmax: torch.Tensor, input_size: list[int],
                        kernel_size: list[int], stride: list[int], padding: list[int],
                        dilation: list[int], ceil_mode: bool) -> torch.Tensor:
    """grad_x of the forward that produced ``argmax``, in argmax's layout."""
    geometry = PoolGeometry(input_size, kernel_size, stride, padding, dilation,
                                         ceil_mode)
    if tuple(grad_y.shape) != geometry.output_shape or argmax.shape != grad_y.shape:
        raise ValueError(
            f"max_pool2d_backward: grad_y and argmax must have the forward's output shape "
            f"{geometry.output_shape}, got {tuple(grad_y.shape)} and {tuple(argmax.shape)}")
    if argmax.dtype != geometry.argmax_dtype:
        raise ValueError(f"max_pool2d_backward: argmax must be {geometry.argmax_dtype} for "
                         f"kernel_size={geometry.kernel}, got {argmax.dtype}")
    layout = output_memory_format(argmax)
    grad_x = torch.empty(geometry.input_shape, dtype=grad_y.dtype, device=grad_y.device,
                         memory_format=layout)
    if grad_x.numel() > 0:
        covering = (_covering_count(*args) for args in zip(
            geometry.kernel, geometry.stride, geometry.dilation, strict=True))
        _launch(max_pool_backward_kernel,
                (grad_y.contiguous(memory_format=layout), argmax.contiguous(memory_format=layout),
                 grad_x),
                geometry, grad_x.numel(), geometry.input_shape[3], layout == torch.channels_last,
                **dict(zip(("COVER_H", "COVER_W"), covering, strict=True)))
    return grad_x


_autograd.register(max_pool2d, _autograd.max_pool2d_rules(max_pool2d_backward))


# ---- ahead-of-time records ------------------------------------------------------
# AlexNet's window (3x3, stride 2: uint8 argmax, 2x2 covering outputs per input)
# in both layouts, with 32-bit indexing. Other windows compile the same code
# with other unroll counts.
_AOT_WINDOW = {"KH": 3, "KW": 3}
# Tile columns of paper:pool1: its 27 (forward) / 55 (backward) wide rows take 32 / 64;
# one tile width per layout here: 32 for NCHW, 96 channels take 128 for NHWC.
_AOT_BLOCK_C = {False: 32, True: 128}
_AOT_COVERING = dict.fromkeys(("COVER_H", "COVER_W"), _covering_count(3, 2, 1))
_AOT_SHAPE_ARGS = ("numel", "channels", "in_h", "in_w", "out_h", "out_w", "stride_h",
                   "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w")


def _aot_kernels() -> list[AotKernel]:
    kernels = []
    specs = (
        (max_pool_forward_kernel, ("x_ptr", "y_ptr"), {}),
        (max_pool_backward_kernel, ("grad_y_ptr", "grad_x_ptr"), _AOT_COVERING),
    )
    for kernel, value_pointers, extra in specs:
        for dtype in ("fp32", "fp16", "bf16"):
            for channels_last in (False, True):
                for config in _CONFIGS:
                    constexprs = {**_AOT_WINDOW, "CHANNELS_LAST": channels_last, "INT64": False,
                                  "BLOCK_C": _AOT_BLOCK_C[channels_last], **extra,
                                  **config.kwargs}
                    signature = {name: f"*{dtype}" for name in value_pointers}
                    signature["argmax_ptr"] = "*u8"
                    signature.update(dict.fromkeys(_AOT_SHAPE_ARGS, "i32"))
                    signature.update(dict.fromkeys(constexprs, "constexpr"))
                    # In the kernel's argument order.
                    signature = {name: signature[name] for name in kernel.fn.arg_names}
                    layout = "nhwc" if channels_last else "nchw"
                    block = config.kwargs["BLOCK"]
                    kernels.append(AotKernel(
                        name=f"{kernel.fn.__name__}[{dtype}, {layout}, BLOCK={block}]",
                        fn=kernel.fn,
                        signature=signature,
                        constexprs=constexprs,
                        num_warps=config.num_warps,
                    ))
    return kernels


AOT_KERNELS = _aot_kernels()
