"""The PyTorch reference implementations (the ``"torch"`` backend).

Tests and benchmarks import their baselines from here, so what the kernels are
compared with and what they are timed against is one and the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (rtol, atol) for comparing a kernel's output in `dtype` with the float64
# reference computed from the same (already rounded) inputs. Half types are
# loaded into fp32 registers, so their error is the final rounding plus the
# rounding of y/grad_y when those are inputs.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def lrn(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
        k: float = 1.0) -> torch.Tensor:
    """``torch.nn.functional.local_response_norm``: x (N, C, *) -> same shape."""
    return F.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)


def max_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False):
    """``torch.nn.functional.max_pool2d``: x (N, C, H, W) or (C, H, W) -> pooled."""
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                        return_indices=return_indices)


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.nn.functional.dropout``; with a generator, the same computation as
    eager's CPU dropout (``bernoulli_(1 - p)``, ``div_(1 - p)``, multiply) drawn from it."""
    if generator is None or not training or p == 0.0 or p == 1.0 or x.numel() == 0:
        return F.dropout(x, p, training, inplace)
    noise = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)
    return x.mul_(noise) if inplace else x * noise


def conv2d_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.relu(F.conv2d(...))``: x (N, Cin, H, W) -> (N, Cout, OH, OW)."""
    return F.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))


# Dtypes of cuDNN's fused convolution + bias + ReLU forward.
_CUDNN_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _cudnn_fused_forward_applies(x: torch.Tensor, weight: torch.Tensor,
                                 bias: torch.Tensor | None) -> bool:
    """Whether :func:`conv2d_relu_fast` may run cuDNN's fused forward: CUDA tensors with
    cuDNN, no gradient wanted (it has no backward formula), outside torch.compile (it
    has no fake kernel; inductor fuses the ReLU itself)."""
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    return (x.is_cuda and not wants_grad and x.dtype in _CUDNN_FUSED_DTYPES
            and hasattr(torch, "cudnn_convolution_relu") and torch.backends.cudnn.enabled
            and torch.backends.cudnn.is_available() and not torch.compiler.is_compiling())


def conv2d_relu_fast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: tuple[int, int], padding: tuple[int, int],
                     dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """PyTorch's fastest way to ``F.relu(F.conv2d(...))`` (the ``torch`` backend of
    conv2d_relu): x (N, Cin, H, W), symmetric padding -> (N, Cout, OH, OW).

    The ReLU runs in place on the convolution's output, as torchvision's
    ``nn.ReLU(inplace=True)``: no second activation-sized tensor, and autograd's
    backward is the masked gradient (grad_y where y > 0) into
    ``aten.convolution_backward``, as our kernels compute it. On CUDA without
    autograd, cuDNN's fused convolution + bias + ReLU forward where this build of
    PyTorch exposes it (``torch.cudnn_convolution_relu``).
    """
    if _cudnn_fused_forward_applies(x, weight, bias):
        return torch.cudnn_convolution_relu(x, weight, bias, list(stride), list(padding),
                                            list(dilation), groups)
    return F.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups), inplace=True)
