"""Argument normalisation shared by the front ends, the Triton ops and the models:
int-or-pair arguments and max-pool window geometry, with PyTorch's rules."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

# Windows of up to this many positions store their argmax in a uint8.
_MAX_BYTE_ARGMAX_WINDOW = 256

IntPair = int | Sequence[int]


def int_pair(op: str, name: str, value: IntPair) -> tuple[int, int]:
    """An int or a sequence of one or two ints (not bools), as PyTorch's convolution and
    pooling accept, as a pair; a TypeError naming ``op`` and ``name`` otherwise."""
    if isinstance(value, numbers.Integral):
        items: tuple = (value,)
    elif isinstance(value, Sequence):
        items = tuple(value)
    else:
        items = ()
    if len(items) not in (1, 2) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{op}: {name} must be an int or a tuple of two ints, got {value!r}")
    return (int(items[0]), int(items[-1]))


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool) -> int:
    """PyTorch's pooling output length along one axis (ATen/native/Pool.h)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    output = span // stride + 1
    # In ceil mode the last window must start inside the input or its left padding.
    if ceil_mode and (output - 1) * stride >= size + padding:
        output -= 1
    return output


class PoolGeometry:
    """Validated arguments of one max pool over a 4-D input shape."""

    def __init__(self, shape: Sequence[int], kernel_size: IntPair, stride: IntPair | None,
                 padding: IntPair, dilation: IntPair, ceil_mode: bool) -> None:
        self.kernel = int_pair("max_pool2d", "kernel_size", kernel_size)
        no_stride = stride is None or (not isinstance(stride, numbers.Integral)
                                       and len(stride) == 0)
        self.stride = self.kernel if no_stride else int_pair("max_pool2d", "stride", stride)
        self.padding = int_pair("max_pool2d", "padding", padding)
        self.dilation = int_pair("max_pool2d", "dilation", dilation)
        self.ceil_mode = bool(ceil_mode)
        # A symbolic size (torch.export's dynamic batch) stays symbolic: int() would
        # specialise the traced graph to the example's size.
        self.input_shape = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in shape)
        self._check()
        n, c, h, w = self.input_shape
        out_h, out_w = (
            pool_output_size(size, *args, self.ceil_mode)
            for size, *args in zip((h, w), self.kernel, self.stride, self.padding, self.dilation,
                                   strict=True))
        self.output_shape = (n, c, out_h, out_w)
        if min(self.output_shape[2:]) < 1:
            raise ValueError(
                f"max_pool2d: the input of size {h}x{w} is too small for kernel_size="
                f"{self.kernel} with padding={self.padding} and dilation={self.dilation}: "
                f"the output would be {self.output_shape[2]}x{self.output_shape[3]}")

    def _check(self) -> None:
        for name, value in (("kernel_size", self.kernel), ("stride", self.stride),
                            ("dilation", self.dilation)):
            if min(value) <= 0:
                raise ValueError(f"max_pool2d: {name} must be greater than zero, got {value}")
        if min(self.padding) < 0:
            raise ValueError(f"max_pool2d: padding must be non-negative, got {self.padding}")
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel, strict=True)):
            raise ValueError(
                f"max_pool2d: padding must be at most half of kernel_size, got padding="
                f"{self.padding} and kernel_size={self.kernel}")
        if self.input_shape[1] == 0 or min(self.input_shape[2:]) == 0:
            raise ValueError(
                "max_pool2d: x may be empty only along the batch dimension, got shape "
                f"{self.input_shape}")

    @property
    def argmax_dtype(self) -> torch.dtype:
        window = self.kernel[0] * self.kernel[1]
        return torch.uint8 if window <= _MAX_BYTE_ARGMAX_WINDOW else torch.int32

    def op_arguments(self) -> tuple:
        """(kernel_size, stride, padding, dilation, ceil_mode) as the registered ops take them."""
        return (list(self.kernel), list(self.stride), list(self.padding), list(self.dilation),
                self.ceil_mode)
