"""Our ops as standard ONNX operators, for ``torch.onnx.export(custom_translation_table=...)``.

Each function receives the op's arguments as ``torch.ops.alexnet_kernels.*`` takes
them (tensors as ONNX values, the rest as Python constants) and builds ONNX nodes
with onnxscript's opset :data:`OPSET`:

* ``conv2d_relu(x, weight, bias, stride, padding, dilation, groups)`` -> ``Conv`` +
  ``Relu``. The Python front end has already resolved ``padding="same"`` /
  ``"valid"`` into symmetric paddings (plus an ``aten.pad`` for 'same''s odd
  remainder), so the op's padding is always symmetric.
* ``lrn(x, size, alpha, beta, k)`` -> ``LRN``. Both divide alpha by ``size``
  (PyTorch averages the squares; ONNX multiplies their sum by ``alpha / size``), so
  alpha, beta and k carry over unchanged. The windows differ for an even size:
  PyTorch sums channels ``[c - size // 2, c + (size - 1) // 2]``, ONNX
  ``[c - (size - 1) // 2, c + size // 2]``, and ONNX Runtime's ``LRN`` refuses
  even sizes and inputs other than 4-D; so those are written out with standard operators as PyTorch
  computes it: the squares, viewed as (N, 1, C, rest), averaged by an
  ``AveragePool`` of (size, 1) with PyTorch's channel padding, then
  ``x / (k + alpha * mean) ** beta``.
* ``max_pool2d_values(x, kernel_size, stride, padding, dilation, ceil_mode)`` ->
  ``MaxPool`` with the same attributes (ONNX pads act as -inf, as PyTorch's do).
  The ``(y, argmax)`` op ``max_pool2d`` has no translation: its window-offset
  argmax has no ONNX equivalent, and inference on the CPU runs the values op.

Dropout needs no translation: in eval mode it is not in the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from onnxscript import opset18 as op

from alexnet_kernels.ops._args import pool_output_size

# The ONNX opset the translations are written for (export_onnx exports with it).
OPSET = 18


def conv2d_relu(x, weight, bias, stride: Sequence[int], padding: Sequence[int],
                dilation: Sequence[int], groups: int):
    """``Relu(Conv(x, weight, bias))``: (N, Cin, H, W) -> (N, Cout, OH, OW)."""
    inputs = (x, weight) if bias is None else (x, weight, bias)
    y = op.Conv(*inputs, strides=list(stride), pads=[*padding, *padding],
                dilations=list(dilation), group=int(groups))
    return op.Relu(y)


def _lrn_by_pooling(x, size: int, alpha: float, beta: float, k: float):
    """PyTorch's LRN formula in standard operators, for any size: (N, C, *) -> same shape."""
    squares = op.Mul(x, x)
    # (N, C, *) -> (N, 1, C, prod(*)): the channel window becomes a 2-D pool's rows.
    stacked = op.Reshape(op.Unsqueeze(squares, op.Constant(value_ints=[1])),
                         op.Constant(value_ints=[0, 1, 0, -1]))
    mean = op.AveragePool(stacked, kernel_shape=[int(size), 1],
                          pads=[int(size) // 2, 0, (int(size) - 1) // 2, 0], count_include_pad=1)
    mean = op.Reshape(mean, op.Shape(x))
    scale = op.Add(op.Mul(mean, op.CastLike(op.Constant(value_float=float(alpha)), x)),
                   op.CastLike(op.Constant(value_float=float(k)), x))
    return op.Div(x, op.Pow(scale, op.CastLike(op.Constant(value_float=float(beta)), x)))


def lrn(x, size: int, alpha: float, beta: float, k: float):
    """``LRN`` (odd sizes, 4-D x) or its decomposition: (N, C, *) -> same shape."""
    if size % 2 == 0 or len(x.shape) != 4:
        return _lrn_by_pooling(x, size, alpha, beta, k)
    return op.LRN(x, size=int(size), alpha=float(alpha), beta=float(beta), bias=float(k))


def _ceil_end_padding(x, kernel_size: Sequence[int], stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int]) -> list[int] | None:
    """End paddings that make ``MaxPool(ceil_mode=0)`` produce PyTorch's ceil-mode output
    size, or None where ``ceil_mode=1`` already agrees (or H, W are not static).

    ONNX rounds up without PyTorch's rule that the last window must start inside
    the input or its left padding (ONNX's shape inference then disagrees with the
    exported shapes), so where that rule removes a window the extra window is
    written as explicit -inf padding after the input instead.
    """
    sizes = list(x.shape)[2:]
    if not all(isinstance(n, int) for n in sizes):
        return None
    ends = []
    for n, k, s, p, d in zip(sizes, kernel_size, stride, padding, dilation, strict=True):
        span = n + 2 * p - d * (k - 1) - 1
        if -(-span // s) + 1 == pool_output_size(n, k, s, p, d, True):
            ends.append(None)
        else:  # the floor-mode size with this end padding is PyTorch's output size
            ends.append(max((pool_output_size(n, k, s, p, d, True) - 1) * s + d * (k - 1) + 1
                            - n - p, 0))
    if all(end is None for end in ends):
        return None
    return [p if end is None else end for end, p in zip(ends, padding, strict=True)]


def max_pool2d_values(x, kernel_size: Sequence[int], stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool):
    """``MaxPool``'s values output: (N, C, H, W) -> (N, C, OH, OW), PyTorch's sizes."""
    ends = _ceil_end_padding(x, kernel_size, stride, padding, dilation) if ceil_mode else None
    if ends is not None:  # floor mode, with the last window's padding explicit
        pads, ceil_mode = [*padding, *ends], False
    else:
        pads = [*padding, *padding]
    y, _ = op.MaxPool(x, kernel_shape=list(kernel_size), strides=list(stride), pads=pads,
                      dilations=list(dilation), ceil_mode=int(bool(ceil_mode)))
    return y


def translation_table() -> dict[torch._ops.OpOverload, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export``: our inference ops -> ONNX."""
    ops = torch.ops.alexnet_kernels
    return {ops.conv2d_relu.default: conv2d_relu, ops.lrn.default: lrn,
            ops.max_pool2d_values.default: max_pool2d_values}
