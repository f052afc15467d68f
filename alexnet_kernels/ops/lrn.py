"""Cross-channel Local Response Normalization (LRN).

``y[n, c, ...] = x[n, c, ...] * (k + alpha / size * sum_{c' in W(c)} x[n, c', ...]**2) ** -beta``
with ``W(c) = [c - size // 2, c + (size - 1) // 2]`` clipped to the existing
channels: exactly ``torch.nn.functional.local_response_norm``.
"""

from __future__ import annotations

import math
import numbers

import torch

from alexnet_kernels import _extension, backends, reference
from alexnet_kernels.ops import _autograd
from alexnet_kernels.ops.layout import output_memory_format

_OP = "alexnet_kernels::lrn"
_IMPLEMENTED = ("native", "triton", "torch")


def _check_arguments(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"lrn: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3:
        raise ValueError(
            f"lrn: x must have at least 3 dimensions (N, C, *), got {x.dim()} "
            f"with shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"lrn: x must be a floating-point tensor (float32, float64, float16, bfloat16), "
            f"got {x.dtype}"
        )
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"lrn: size must be an int, got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"lrn: size must be >= 1, got {size}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"lrn: {name} must be a real number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"lrn: {name} must be finite, got {value}")


def lrn(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
        *, backend: str = "auto") -> torch.Tensor:
    """Local response normalisation across channels.

    Args:
        x: input of shape (N, C, *) with at least 3 dimensions, floating point;
            contiguous or channels_last.
        size: number of neighbouring channels in the window.
        alpha: multiplicative factor (divided by ``size``, as in PyTorch).
        beta: exponent.
        k: additive factor.
        backend: "auto", "native", "triton" or "torch" (see ``alexnet_kernels.backends``).

    Returns:
        A tensor of x's shape and dtype (channels_last when x is).
    """
    _check_arguments(x, size, alpha, beta, k)
    chosen = backends.resolve(backend, x.device, "lrn", _IMPLEMENTED, tensors=(x,),
                              args=(int(size), float(alpha), float(beta), float(k)))
    if chosen == "torch":
        return reference.lrn(x, size, alpha, beta, k)
    if chosen == "triton":
        # Imported here so that importing the package never imports triton.
        from alexnet_kernels.triton import lrn as triton_lrn

        return triton_lrn.lrn(x, int(size), float(alpha), float(beta), float(k))
    return torch.ops.alexnet_kernels.lrn(x, int(size), float(alpha), float(beta), float(k))


def _empty_output(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device,
                       memory_format=output_memory_format(x))


_INT32_MAX = 2**31 - 1


def _check_op_arguments(x: torch.Tensor, size: int, alpha: float, beta: float,
                        k: float) -> None:
    """The raw op's own checks (csrc/lrn.h), with its messages, for the fake kernels: so
    that a traced call fails where the real kernel would, not later on a real tensor."""
    if x.dim() < 3:
        raise RuntimeError(f"lrn: x must have at least 3 dimensions (N, C, *), got {x.dim()} "
                           f"dimensions with shape {list(x.shape)}")
    if not x.is_floating_point():
        raise RuntimeError(f"lrn: x must be float64, float32, float16 or bfloat16, got {x.dtype}")
    if size < 1:
        raise RuntimeError(f"lrn: size must be >= 1, got {size}")
    if size > _INT32_MAX:
        raise RuntimeError(f"lrn: size must fit in 32 bits, got {size}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not math.isfinite(value):
            raise RuntimeError(f"lrn: {name} must be finite, got {value}")


def _lrn_fake(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    _check_op_arguments(x, size, alpha, beta, k)
    return _empty_output(x)


def _lrn_backward_fake(grad_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: int,
                       alpha: float, beta: float, k: float) -> torch.Tensor:
    _check_op_arguments(x, size, alpha, beta, k)
    if grad_y.shape != x.shape or y.shape != x.shape:
        raise RuntimeError("lrn_backward: grad_y, x and y must have the same shape, got "
                           f"{list(grad_y.shape)}, {list(x.shape)} and {list(y.shape)}")
    if grad_y.dtype != x.dtype or y.dtype != x.dtype:
        raise RuntimeError("lrn_backward: grad_y, x and y must have the same dtype, got "
                           f"{grad_y.dtype}, {x.dtype} and {y.dtype}")
    if grad_y.device != x.device or y.device != x.device:
        raise RuntimeError("lrn_backward: grad_y, x and y must be on the same device, got "
                           f"{grad_y.device}, {x.device} and {y.device}")
    return _empty_output(x)


if _extension.is_loaded():
    torch.library.register_fake(_OP)(_lrn_fake)
    torch.library.register_fake("alexnet_kernels::lrn_backward")(_lrn_backward_fake)
    _autograd.register(_OP, _autograd.lrn_rules(torch.ops.alexnet_kernels.lrn_backward))
