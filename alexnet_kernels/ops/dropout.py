"""Dropout with a counter-based (Philox4x32-10) mask that is regenerated, never stored.

``y = x * mask / (1 - p)`` with the semantics of ``torch.nn.functional.dropout``.

Mask convention (identical on every backend, bit for bit)::

    key     = (seed & 0xffffffff, seed >> 32)
    counter = (offset // 4 & 0xffffffff, offset // 4 >> 32, group & 0xffffffff, group >> 32)
    group   = element_index // 4    (element_index: position in x's memory order)
    element 4 * group + i is kept iff word i of Philox4x32-10(counter, key) < threshold,
    threshold = min(floor((1 - p) * 2**32), 2**32 - 1)

The output is laid out like ``torch.empty_like(x)``: with x's own strides when x is
non-overlapping and dense (contiguous, channels_last or any permutation), else in
x's suggested memory format, into which x is copied first. Memory order is that
layout's.

Seeding: the op ``alexnet_kernels::dropout(Tensor x, Tensor seed_offset, float p)``
takes ``seed_offset``, an int64 tensor holding ``(seed, offset)`` (the
two's-complement bits of the unsigned values), so that it stays a tensor under
``torch.compile``.

* A CUDA generator (the default one of x's device, or ``generator``) works the
  way PyTorch's own CUDA dropout does (cuRAND's layout: the group is the
  subsequence, the offset addresses the counter within it): seed =
  ``initial_seed()``, offset = ``get_offset()``, and the generator's offset is
  advanced by 4, the one Philox call each group draws. So ``torch.manual_seed``
  makes runs reproducible, and no two calls, ours or PyTorch's own random ops on
  that generator, ever draw the same counters.
* A CPU generator has no offset (``get_offset`` raises "CPU Generator does not use
  offset"), so each call draws a fresh 64-bit seed from the generator itself
  (``torch.randint``, which advances it) and uses offset 0. This is traceable:
  under ``torch.compile(fullgraph=True)`` the draw becomes part of the graph
  (compiled code may draw it from its own random stream, so a compiled run's mask
  can differ from an eager run's, as with PyTorch's dropout).
* On CUDA while a CUDA graph is captured (``torch.cuda.graph``,
  ``torch.compile(mode="reduce-overhead")``) or while ``torch.compile`` traces, the
  seed is drawn the same way but on the device (PyTorch's graph-safe Philox state,
  so every replay draws a new one), ``seed_offset`` stays on the device, and the
  CUDA and Triton kernels read it there: a key read on the host at capture time
  would be replayed unchanged and freeze the mask.

Nothing activation-sized is saved for the backward: it applies the same op to
``grad_y`` with the saved ``seed_offset``, giving ``grad_y * mask / (1 - p)``.
"""

from __future__ import annotations

import numbers

import torch

from alexnet_kernels import _extension, backends, reference
from alexnet_kernels.ops import _autograd

_OP = "alexnet_kernels::dropout"
_IMPLEMENTED = ("native", "triton", "torch")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Generator offset a call reserves: one Philox call (4 outputs) per group.
_OFFSET_PER_CALL = 4


def _check_arguments(x: torch.Tensor, p: float, training: bool, inplace: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"dropout: x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"dropout: p must be a real number, got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"dropout: p must be between 0 and 1, got {p}")
    for name, value in (("training", training), ("inplace", inplace)):
        if not isinstance(value, bool):
            raise TypeError(f"dropout: {name} must be a bool, got {type(value).__name__}")


def _check_writable(x: torch.Tensor) -> None:
    """In place, x must not have elements that share memory (an expanded tensor, stride 0
    along a dimension of size > 1), which PyTorch's in-place ops refuse."""
    if any(size > 1 and stride == 0 for size, stride in zip(x.shape, x.stride(), strict=True)):
        raise RuntimeError(
            "dropout: inplace=True cannot write into x, whose elements share memory (stride 0 "
            f"along a dimension of size > 1: shape {tuple(x.shape)}, strides {x.stride()}); "
            "clone x first or use inplace=False")


def _to_int64(value: int) -> int:
    """The int64 with the bits of an unsigned 64-bit value."""
    return value - 2**64 if value > _INT64_MAX else value


def _drawn_on_the_device(x: torch.Tensor) -> bool:
    """Whether a CUDA call's key must be drawn by a device op: while a CUDA graph is
    captured (a key read on the host would be replayed unchanged, freezing the mask) and
    while torch.compile traces (the generator's offset is host state outside the graph)."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _seed_offset(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(seed, offset) for one call as an int64 tensor, advancing the generator: on the
    CPU, or on x's CUDA device where ``_drawn_on_the_device``."""
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"dropout: generator is for {generator.device.type} but x is on {x.device}"
        )
    if x.device.type == "cpu" or _drawn_on_the_device(x):
        seed = torch.randint(_INT64_MIN, _INT64_MAX, (1,), dtype=torch.int64,
                             generator=generator, device=x.device)
        return torch.cat([seed, seed.new_zeros(1)])
    if generator is None:
        index = x.device.index if x.device.index is not None else torch.cuda.current_device()
        generator = torch.cuda.default_generators[index]
    offset = generator.get_offset()
    generator.set_offset(offset + _OFFSET_PER_CALL)
    return torch.tensor([_to_int64(generator.initial_seed()), _to_int64(offset)],
                        dtype=torch.int64)


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
            generator: torch.Generator | None = None, backend: str = "auto") -> torch.Tensor:
    """Randomly zero elements of x with probability p and scale the rest by 1 / (1 - p).

    Args:
        x: floating-point tensor of any shape (float32, float64, float16, bfloat16).
        p: probability of an element being zeroed, in [0, 1].
        training: apply dropout (else x is returned unchanged, like F.dropout).
        inplace: write the result into x and return x.
        generator: the torch.Generator to draw from (default: the default
            generator of x's device); see the module docstring for how it is used.
        backend: "auto", "native", "triton" or "torch" (see ``alexnet_kernels.backends``);
            "torch" is ``F.dropout`` itself, with PyTorch's own random stream.

    Returns:
        A tensor of x's shape, dtype and strides (x itself when ``inplace``, or when
        not training, p = 0 or x is empty).
    """
    _check_arguments(x, p, training, inplace)
    chosen = backends.resolve(backend, x.device, "dropout", _IMPLEMENTED, tensors=(x,),
                              args=(float(p), training))
    if chosen == "torch":
        return reference.dropout(x, p, training, inplace, generator=generator)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if inplace:
        _check_writable(x)
    if p == 1.0:  # like F.dropout: x * 0 (NaN stays NaN)
        return x.mul_(0.0) if inplace else x * 0.0
    seed_offset = _seed_offset(x, generator)
    if chosen == "triton":
        from alexnet_kernels.triton import dropout as triton_dropout

        y = triton_dropout.dropout(x, seed_offset, float(p))
    else:
        y = torch.ops.alexnet_kernels.dropout(x, seed_offset, float(p))
    return x.copy_(y) if inplace else y


def _check_op_arguments(x: torch.Tensor, seed_offset: torch.Tensor, p: float) -> None:
    """The raw op's own checks (csrc/dropout.h), with its messages, for the fake kernel."""
    if not x.is_floating_point():
        raise RuntimeError(
            f"dropout: x must be float64, float32, float16 or bfloat16, got {x.dtype}")
    if not 0.0 < p < 1.0:
        raise RuntimeError("dropout: the kernel needs 0 < p < 1 (alexnet_kernels.dropout "
                           f"handles p = 0 and p = 1 itself), got p = {p}")
    if seed_offset.dtype != torch.int64:
        raise RuntimeError(f"dropout: seed_offset must be an int64 tensor, got {seed_offset.dtype}")
    if seed_offset.device.type != "cpu" and seed_offset.device != x.device:
        raise RuntimeError(f"dropout: seed_offset must be a CPU tensor or on x's device "
                           f"({x.device}), got {seed_offset.device}")
    if seed_offset.shape != (2,):
        raise RuntimeError("dropout: seed_offset must have shape (2,) holding (seed, offset), "
                           f"got shape {list(seed_offset.shape)}")


def _dropout_fake(x: torch.Tensor, seed_offset: torch.Tensor, p: float) -> torch.Tensor:
    _check_op_arguments(x, seed_offset, p)
    return torch.empty_like(x)


if _extension.is_loaded():
    torch.library.register_fake(_OP)(_dropout_fake)
    _autograd.register(_OP, _autograd.dropout_rules(torch.ops.alexnet_kernels.dropout))

