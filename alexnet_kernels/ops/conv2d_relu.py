"""Fused 2-D convolution + bias + ReLU: ``F.relu(F.conv2d(x, weight, bias, ...))``.

Same arguments and conventions as ``torch.nn.functional.conv2d``: ints or pairs,
``padding="same"`` / ``"valid"``, 3-D (unbatched) or 4-D input, ``groups``. The
backward needs only x, weight and the output y (the ReLU mask is y > 0), so no
pre-activation tensor is kept.

Backends: the compiled kernels (``native``: oneDNN's convolution with the ReLU
fused on CPU tensors; on CUDA tensors hand-written implicit-GEMM kernels,
tensor cores for fp16/bf16 on sm_80+, FFMA for fp32/fp64, with a
deterministic weight gradient), the Triton kernels (``triton``: implicit
GEMMs with ``tl.dot``) and the PyTorch reference (``torch``).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from alexnet_kernels import _extension, backends, reference
from alexnet_kernels.ops import _autograd
from alexnet_kernels.ops._args import IntPair, int_pair

_OP = "alexnet_kernels::conv2d_relu"
_BACKWARD_OP = "alexnet_kernels::conv2d_relu_backward"
_IMPLEMENTED = ("native", "triton", "torch")
# Devices with a compiled kernel for this op.
_NATIVE_DEVICES = ("cpu", "cuda")

def _check_tensors(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"conv2d_relu: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"conv2d_relu: x must be 3-D (C, H, W) or 4-D (N, C, H, W), got "
                         f"shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError("conv2d_relu: weight must be 4-D (Cout, Cin / groups, KH, KW), got "
                         f"shape {tuple(weight.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"conv2d_relu: x must be a floating-point tensor, got {x.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"conv2d_relu: {name} must have x's dtype {x.dtype}, got {t.dtype}")


def _check_shapes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> None:
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"conv2d_relu: groups must be a positive int, got {groups!r}")
    in_channels, out_channels = x.shape[1], weight.shape[0]
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"conv2d_relu: groups={groups} must divide the input channels "
                         f"({in_channels}) and the output channels ({out_channels})")
    if weight.shape[1] * groups != in_channels:
        raise ValueError(f"conv2d_relu: weight expects {weight.shape[1] * groups} input channels "
                         f"({weight.shape[1]} per group x {groups} groups), but x has "
                         f"{in_channels}")
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"conv2d_relu: bias must have shape ({out_channels},), got "
                         f"{tuple(bias.shape)}")
    for axis in range(2):
        span = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
        if x.shape[2 + axis] + 2 * padding[axis] < span:
            raise ValueError(
                f"conv2d_relu: the (padded) input of size {tuple(x.shape[2:])} is smaller than "
                f"the (dilated) kernel {tuple(weight.shape[2:])} with padding={padding} and "
                f"dilation={dilation}")


def _resolve_padding(x: torch.Tensor, weight: torch.Tensor, padding, stride: tuple[int, int],
                     dilation: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """(x, symmetric padding): 'same' pads x's far side by the odd remainder, as PyTorch does."""
    if not isinstance(padding, str):
        pair = int_pair("conv2d_relu", "padding", padding)
        if min(pair) < 0:
            raise ValueError(f"conv2d_relu: padding must be non-negative, got {pair}")
        return x, pair
    if padding == "valid":
        return x, (0, 0)
    if padding != "same":
        raise ValueError(f"conv2d_relu: padding must be 'same', 'valid' or ints, got {padding!r}")
    if stride != (1, 1):
        raise ValueError("conv2d_relu: padding='same' is not supported for strided convolutions")
    totals = [dilation[a] * (weight.shape[2 + a] - 1) for a in range(2)]
    left = tuple(t // 2 for t in totals)
    extra = [t - 2 * lo for t, lo in zip(totals, left, strict=True)]
    if any(extra):
        x = F.pad(x, (0, extra[1], 0, extra[0]))
    return x, left


def _autocast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Under ``torch.autocast`` for x's device, the operands in the autocast dtype, as
    autocast casts ``F.conv2d``'s: a custom op has no autocast rule of its own, so
    without this an fp32 model under autocast would run its convolutions in fp32."""
    if not isinstance(x, torch.Tensor) or not torch.is_autocast_enabled(x.device.type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(x.device.type)

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        # Autocast leaves float64 (and non-float) tensors alone.
        if isinstance(t, torch.Tensor) and t.dtype in (torch.float32, torch.float16,
                                                       torch.bfloat16):
            return t.to(dtype)
        return t
    return cast(x), cast(weight), cast(bias)


def conv2d_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                stride: IntPair = 1, padding: IntPair | str = 0, dilation: IntPair = 1,
                groups: int = 1, *, backend: str = "auto") -> torch.Tensor:
    """``relu(conv2d(x, weight, bias))`` in one op.

    Args:
        x: (N, Cin, H, W) or (Cin, H, W), floating point.
        weight: (Cout, Cin / groups, KH, KW), x's dtype and device.
        bias: (Cout,) or None.
        stride, padding, dilation, groups: as ``F.conv2d`` (padding may be 'same' or 'valid').
        backend: "auto", "native", "triton" or "torch" (see ``alexnet_kernels.backends``).

    Returns:
        (N, Cout, OH, OW) (or (Cout, OH, OW)), non-negative; under ``torch.autocast``
        computed in the autocast dtype, as ``F.conv2d`` is.
    """
    x, weight, bias = _autocast(x, weight, bias)
    _check_tensors(x, weight, bias)
    stride_pair = int_pair("conv2d_relu", "stride", stride)
    dilation_pair = int_pair("conv2d_relu", "dilation", dilation)
    if min(stride_pair) < 1 or min(dilation_pair) < 1:
        raise ValueError(f"conv2d_relu: stride and dilation must be positive, got "
                         f"stride={stride_pair}, dilation={dilation_pair}")
    unbatched = x.dim() == 3
    x4 = x.unsqueeze(0) if unbatched else x
    x4, padding_pair = _resolve_padding(x4, weight, padding, stride_pair, dilation_pair)
    _check_shapes(x4, weight, bias, padding_pair, dilation_pair, groups)
    chosen = backends.resolve(backend, x.device, "conv2d_relu", _IMPLEMENTED,
                              native_devices=_NATIVE_DEVICES, tensors=(x4, weight, bias),
                              args=(stride_pair, padding_pair, dilation_pair, int(groups)))
    if chosen == "torch":
        y = reference.conv2d_relu_fast(x4, weight, bias, stride_pair, padding_pair,
                                       dilation_pair, groups)
    elif chosen == "triton":
        # Imported here so that importing the package never imports triton.
        from alexnet_kernels.triton import conv2d_relu as triton_conv2d_relu

        y = triton_conv2d_relu.conv2d_relu(x4, weight, bias, list(stride_pair),
                                           list(padding_pair), list(dilation_pair), int(groups))
    else:
        y = torch.ops.alexnet_kernels.conv2d_relu(x4, weight, bias, list(stride_pair),
                                                  list(padding_pair), list(dilation_pair),
                                                  int(groups))
    return y.squeeze(0) if unbatched else y


def _conv2d_relu_fake(x, weight, bias, stride, padding, dilation, groups):
    return torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, False, [0, 0],
                                      groups)


def _conv2d_relu_backward_fake(grad_y, x, weight, y, stride, padding, dilation, groups,
                               output_mask):
    # PyTorch's own shape and layout rules (e.g. grad_weight follows x's channels_last).
    grads = torch.ops.aten.convolution_backward(grad_y, x, weight, [weight.shape[0]], stride,
                                                padding, dilation, False, [0, 0], groups,
                                                output_mask)
    return tuple(g if g is not None else x.new_empty(0) for g in grads)


if _extension.is_loaded():
    torch.library.register_fake(_OP)(_conv2d_relu_fake)
    torch.library.register_fake(_BACKWARD_OP)(_conv2d_relu_backward_fake)
    _autograd.register(
        _OP, _autograd.conv2d_relu_rules(torch.ops.alexnet_kernels.conv2d_relu_backward))
