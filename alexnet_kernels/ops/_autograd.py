"""Autograd rules of every op, shared by the native ops and the Triton ops.

Each ``<op>_rules(backward_op)`` returns the (backward, setup_context) pair that
``register_autograd`` takes for a forward op with the registered schema, whose
gradient ``backward_op`` computes (the native ``torch.ops.alexnet_kernels.*_backward``
or the Triton ``triton_op`` of the same schema). ``register(op, rules)`` installs it
on an op name or on a ``torch.library`` custom op object. Front ends import this
module; it imports neither the front ends nor Triton.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch


class Rules(NamedTuple):
    backward: Callable
    setup_context: Callable


def register(op: Any, rules: Rules) -> None:
    """``register_autograd`` of ``op`` (a qualified name or a custom op object)."""
    if isinstance(op, str):
        torch.library.register_autograd(op, rules.backward, setup_context=rules.setup_context)
    else:
        op.register_autograd(rules.backward, setup_context=rules.setup_context)


def lrn_rules(backward_op: Callable) -> Rules:
    """LRN (x, size, alpha, beta, k) -> y; ``backward_op(grad_y, x, y, size, alpha, beta, k)``."""

    def setup_context(ctx, inputs, output) -> None:
        x, size, alpha, beta, k = inputs
        ctx.save_for_backward(x, output)
        ctx.hyper = (size, alpha, beta, k)

    def backward(ctx, grad_y: torch.Tensor):
        x, y = ctx.saved_tensors
        return backward_op(grad_y, x, y, *ctx.hyper), None, None, None, None

    return Rules(backward, setup_context)


def max_pool2d_rules(backward_op: Callable) -> Rules:
    """Max pool (x, kernel_size, stride, padding, dilation, ceil_mode) -> (y, argmax);
    ``backward_op(grad_y, argmax, input_size, kernel_size, stride, padding, dilation,
    ceil_mode)``. Only the argmax is kept."""

    def setup_context(ctx, inputs, output) -> None:
        x, *arguments = inputs
        _, argmax = output
        ctx.save_for_backward(argmax)
        ctx.input_size = list(x.shape)
        ctx.arguments = arguments

    def backward(ctx, grad_y: torch.Tensor, grad_argmax):
        (argmax,) = ctx.saved_tensors
        grad_x = backward_op(grad_y, argmax, ctx.input_size, *ctx.arguments)
        return grad_x, None, None, None, None, None

    return Rules(backward, setup_context)


def dropout_rules(op: Callable) -> Rules:
    """Dropout (x, seed_offset, p) -> y; the backward is ``op`` itself applied to grad_y
    with the saved seed_offset (the mask is regenerated, never stored)."""

    def setup_context(ctx, inputs, output) -> None:
        _, seed_offset, p = inputs
        ctx.save_for_backward(seed_offset)
        ctx.p = p
        ctx.y_strides = output.stride()

    def backward(ctx, grad_y: torch.Tensor):
        (seed_offset,) = ctx.saved_tensors
        # The mask follows memory order, so grad_y must be laid out like y was.
        if grad_y.stride() != ctx.y_strides:
            grad_y = torch.empty_strided(grad_y.shape, ctx.y_strides, dtype=grad_y.dtype,
                                         device=grad_y.device).copy_(grad_y)
        return op(grad_y, seed_offset, ctx.p), None, None

    return Rules(backward, setup_context)


def conv2d_relu_rules(backward_op: Callable) -> Rules:
    """conv2d_relu (x, weight, bias, stride, padding, dilation, groups) -> y;
    ``backward_op(grad_y, x, weight, y, stride, padding, dilation, groups, output_mask)``
    computes only the gradients asked for."""

    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight, output)
        ctx.arguments = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None

    def backward(ctx, grad_y: torch.Tensor):
        x, weight, y = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.has_bias and ctx.needs_input_grad[2]]
        grad_x, grad_w, grad_b = backward_op(grad_y, x, weight, y, *ctx.arguments, mask)
        return (grad_x if mask[0] else None, grad_w if mask[1] else None,
                grad_b if mask[2] else None, None, None, None, None)

    return Rules(backward, setup_context)
