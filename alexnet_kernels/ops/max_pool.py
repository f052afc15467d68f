"""2-D max pooling with the semantics of ``torch.nn.functional.max_pool2d``.

The compiled kernels return, besides the pooled values, a compact argmax per
output: the offset ``kh * kernel_w + kw`` of the maximum inside its window,
stored as uint8 for windows of up to 256 positions (int32 beyond). That is all
the backward keeps, instead of PyTorch's int64 indices into the input plane
(an eighth of the memory for AlexNet's 3x3 windows); PyTorch-style indices are
computed from it only when ``return_indices=True`` asks for them.

On the CPU, a call that needs neither a gradient nor the indices runs
``alexnet_kernels::max_pool2d_values`` instead, which computes the same values
without the argmax (inference). CUDA and Triton always run the (y, argmax) op.

Window rules follow PyTorch exactly: padding acts as -inf, the first maximum
in window order wins ties, a NaN propagates (the last NaN of a window wins).
"""

from __future__ import annotations

import torch

from alexnet_kernels import _extension, backends, reference
from alexnet_kernels.ops import _autograd
from alexnet_kernels.ops._args import IntPair, PoolGeometry
from alexnet_kernels.ops.layout import output_memory_format

_OP = "alexnet_kernels::max_pool2d"
_BACKWARD_OP = "alexnet_kernels::max_pool2d_backward"
_VALUES_OP = "alexnet_kernels::max_pool2d_values"
_IMPLEMENTED = ("native", "triton", "torch")
def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"max_pool2d: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(
            f"max_pool2d: x must be 3-D (C, H, W) or 4-D (N, C, H, W), got {x.dim()}-D "
            f"with shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(
            "max_pool2d: x must be a floating-point tensor (float32, float64, float16, "
            f"bfloat16), got {x.dtype}")


def argmax_to_indices(argmax: torch.Tensor, geometry: PoolGeometry) -> torch.Tensor:
    """PyTorch's int64 ``return_indices`` (ih * W + iw) from the window offsets."""
    kw_size = geometry.kernel[1]
    sh, sw = geometry.stride
    (ph, pw), (dh, dw) = geometry.padding, geometry.dilation
    width = geometry.input_shape[3]
    _, _, out_h, out_w = geometry.output_shape
    offsets = argmax.long()
    rows = torch.arange(out_h, device=argmax.device).view(out_h, 1) * sh - ph
    cols = torch.arange(out_w, device=argmax.device) * sw - pw
    ih = rows + torch.div(offsets, kw_size, rounding_mode="floor") * dh
    iw = cols + (offsets % kw_size) * dw
    return ih * width + iw


def max_pool2d(x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, backend: str = "auto"):
    """2-D max pooling, ``torch.nn.functional.max_pool2d`` on our kernels.

    Args:
        x: (N, C, H, W) or (C, H, W), floating point, contiguous or channels_last.
        kernel_size, stride, padding, dilation: ints or pairs (height, width);
            ``stride`` defaults to ``kernel_size``. ``padding`` is at most half
            the kernel and acts as -inf.
        ceil_mode: round the output size up instead of down.
        return_indices: also return PyTorch-compatible int64 indices (ih * W + iw).
        backend: "auto", "native", "triton" or "torch" (see ``alexnet_kernels.backends``).

    Returns:
        y of shape (N, C, OH, OW) (or (C, OH, OW)), dtype and layout of x; with
        ``return_indices``, ``(y, indices)``.
    """
    _check_input(x)
    unbatched = x.dim() == 3
    x4 = x.unsqueeze(0) if unbatched else x
    geometry = PoolGeometry(x4.shape, kernel_size, stride, padding, dilation, ceil_mode)
    chosen = backends.resolve(backend, x.device, "max_pool2d", _IMPLEMENTED, tensors=(x4,),
                              args=(geometry.kernel, geometry.stride, geometry.padding,
                                    geometry.dilation, geometry.ceil_mode, bool(return_indices)))
    if chosen == "torch":
        return reference.max_pool2d(x, geometry.kernel, geometry.stride, geometry.padding,
                                    geometry.dilation, geometry.ceil_mode, return_indices)
    if chosen == "native" and x.device.type == "cpu" and not return_indices \
            and not (torch.is_grad_enabled() and x.requires_grad):
        y = torch.ops.alexnet_kernels.max_pool2d_values(x4, *geometry.op_arguments())
        return y.squeeze(0) if unbatched else y
    if chosen == "triton":
        # Imported here: importing the package must not import triton.
        from alexnet_kernels.triton import max_pool as triton_max_pool

        forward = triton_max_pool.max_pool2d
    else:
        forward = torch.ops.alexnet_kernels.max_pool2d
    y, argmax = forward(x4, *geometry.op_arguments())
    if unbatched:
        y = y.squeeze(0)
    if not return_indices:
        return y
    indices = argmax_to_indices(argmax, geometry)
    return y, indices.squeeze(0) if unbatched else indices


def _empty_output(x: torch.Tensor, geometry: PoolGeometry, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised (N, C, OH, OW) tensor in the layout the kernels write for x."""
    return torch.empty(geometry.output_shape, dtype=dtype, device=x.device,
                       memory_format=output_memory_format(x))


def _max_pool2d_values_fake(x: torch.Tensor, kernel_size: list[int], stride: list[int],
                            padding: list[int], dilation: list[int], ceil_mode: bool
                            ) -> torch.Tensor:
    geometry = PoolGeometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty_output(x, geometry, x.dtype)


def _max_pool2d_fake(x: torch.Tensor, kernel_size: list[int], stride: list[int],
                     padding: list[int], dilation: list[int], ceil_mode: bool):
    geometry = PoolGeometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty_output(x, geometry, x.dtype), _empty_output(x, geometry, geometry.argmax_dtype)


def _max_pool2d_backward_fake(grad_y: torch.Tensor, argmax: torch.Tensor, input_size,
                              kernel_size, stride, padding, dilation, ceil_mode):
    return torch.empty(input_size, dtype=grad_y.dtype, device=grad_y.device,
                       memory_format=output_memory_format(argmax))


def _values_op_has_no_backward(ctx, grad_y: torch.Tensor):
    raise RuntimeError(
        "alexnet_kernels::max_pool2d_values keeps no argmax, so it has no backward; "
        "call alexnet_kernels.max_pool2d, which uses it only when no gradient is needed")


def _no_context(ctx, inputs, output) -> None:
    pass


if _extension.is_loaded():
    torch.library.register_fake(_OP)(_max_pool2d_fake)
    torch.library.register_fake(_VALUES_OP)(_max_pool2d_values_fake)
    torch.library.register_fake(_BACKWARD_OP)(_max_pool2d_backward_fake)
    _autograd.register(
        _OP, _autograd.max_pool2d_rules(torch.ops.alexnet_kernels.max_pool2d_backward))
    # Without a formula autograd would hand back a y silently cut off from x's graph.
    torch.library.register_autograd(_VALUES_OP, _values_op_has_no_backward,
                                    setup_context=_no_context)
