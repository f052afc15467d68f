"""Property-based differential testing against PyTorch (hypothesis).

The rule every fuzz test applies (:func:`check_differential`): for one drawn
call, our op and PyTorch's reference either both raise — ours with an error of
a plain Python type whose message names the op — or both return, and then
agree: every output and every gradient at the dtype's tolerance, with NaN and
inf in the same places.

What the strategies draw, so that the cases nobody chose are reached:

* values (:func:`draw_values`): normal samples, small integers (ties, signed
  zeros) or subnormals only, with NaN, +-inf, -0.0 and the dtype's smallest
  subnormal written at drawn positions;
* layouts (:func:`draw_tensor`): contiguous, channels_last, and strided views —
  a slice with step 2, a channel slice, transposed spatial axes, an expanded
  (stride 0) batch — whose gaps in storage hold NaN, so a kernel that reads
  outside its view gives a NaN where PyTorch does not;
* arguments: legal values, and exactly one argument just outside its legal
  range in a fixed share of the examples (the ``flaw`` of each op's strategy).

Example counts and seeds come from the hypothesis profile (``tests/conftest.py``):
``ci`` (the default) runs a fixed, derandomized set of examples; ``long``
(``pytest --hypothesis-profile=long``) runs many more with a local database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from hypothesis import strategies as st

from alexnet_kernels.reference import TOLERANCES

# Exceptions a library may raise for a bad call. Anything else (an AttributeError,
# a ZeroDivisionError, ...) is a bug of ours even when PyTorch also refuses the call.
ARGUMENT_ERRORS = (TypeError, ValueError, RuntimeError, NotImplementedError, IndexError)

LAYOUTS = ("contiguous", "channels_last", "step_slice", "channel_slice", "transposed",
           "expanded")


def smallest_subnormal(dtype: torch.dtype) -> float:
    """The smallest positive subnormal number of a floating-point dtype."""
    return torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps


def special_values(dtype: torch.dtype) -> list[float]:
    """NaN, +-inf, -0.0, then the smallest subnormals."""
    return [math.nan, math.inf, -math.inf, -0.0, smallest_subnormal(dtype),
            -smallest_subnormal(dtype)]


def draw_values(data: st.DataObject, shape: Sequence[int], dtype: torch.dtype,
                specials: bool = True, scale: float = 1.0, subnormals: bool = True
                ) -> torch.Tensor:
    """A contiguous tensor of ``shape`` in ``dtype`` with drawn values (see the module doc).

    ``scale`` multiplies the normal samples (keep products far from overflow);
    ``subnormals=False`` leaves subnormal numbers out.
    """
    seed = data.draw(st.integers(0, 2**32 - 1), label="value seed")
    modes = ["normal", "normal", "ties", "subnormal"] if subnormals else ["normal", "ties"]
    mode = data.draw(st.sampled_from(modes), label="value mode")
    generator = torch.Generator().manual_seed(seed)
    if mode == "ties":
        values = torch.randint(-2, 3, tuple(shape), generator=generator).double()
        values[torch.rand(tuple(shape), generator=generator) < 0.2] = -0.0
    else:
        values = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
        values *= smallest_subnormal(dtype) * 64 if mode == "subnormal" else scale
    flat = values.view(-1)
    if specials and flat.numel():
        count = data.draw(st.integers(0, 4), label="special count")
        for _ in range(count):
            position = data.draw(st.integers(0, flat.numel() - 1), label="special position")
            flat[position] = data.draw(st.sampled_from(special_values(dtype)[
                :None if subnormals else 4]), label="special value")
    return values.to(dtype)


def arrange(values: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of ``values`` (contiguous) in ``layout``; gaps of strided views hold NaN.

    Layouts that do not apply to the shape (channels_last of a 3-D tensor,
    expanding a batch larger than one) fall back to a contiguous copy.
    """
    shape = tuple(values.shape)
    if layout == "channels_last" and values.dim() == 4:
        return values.contiguous(memory_format=torch.channels_last)
    if layout == "step_slice" and values.dim() >= 1:
        storage = torch.full((*shape[:-1], 2 * shape[-1]), math.nan, dtype=values.dtype)
        view = storage[..., ::2]
    elif layout == "channel_slice" and values.dim() >= 2:
        storage = torch.full((shape[0], shape[1] + 2, *shape[2:]), math.nan, dtype=values.dtype)
        view = storage[:, 1:shape[1] + 1]
    elif layout == "transposed" and values.dim() >= 2:
        storage = torch.empty((*shape[:-2], shape[-1], shape[-2]), dtype=values.dtype)
        view = storage.transpose(-1, -2)
    elif layout == "expanded" and values.dim() >= 2 and shape[0] >= 1:
        return values[:1].expand(shape)
    else:
        return values.clone()
    view.copy_(values)
    return view


def draw_tensor(data: st.DataObject, shape: Sequence[int], dtype: torch.dtype,
                layouts: Sequence[str] = LAYOUTS, label: str = "x", **value_options
                ) -> torch.Tensor:
    """Drawn values (:func:`draw_values`) in a drawn layout (:func:`arrange`)."""
    layout = data.draw(st.sampled_from(list(layouts)), label=f"{label} layout")
    return arrange(draw_values(data, shape, dtype, **value_options), layout)


def draw_flaw(data: st.DataObject, names: Sequence[str], legal_share: int = 3) -> str | None:
    """None (a legal call) in ``legal_share`` of ``legal_share + 1`` examples, else the
    name of the one argument to draw just outside its legal range."""
    choices = [None] * (legal_share * len(names)) + list(names)
    return data.draw(st.sampled_from(choices), label="flaw")


# ---- running and comparing ------------------------------------------------------

Result = dict[str, torch.Tensor]


@dataclasses.dataclass
class Outcome:
    result: Result | None = None
    error: BaseException | None = None


def run(thunk: Callable[[], Result]) -> Outcome:
    """The result of ``thunk``, or the argument error it raised (any other error propagates)."""
    try:
        return Outcome(result=thunk())
    except ARGUMENT_ERRORS as error:
        return Outcome(error=error)


def replay(outcome: Outcome) -> Result:
    """An outcome again: its result, or its error raised."""
    if outcome.error is not None:
        raise outcome.error
    assert outcome.result is not None
    return outcome.result


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def check_differential(op: str, ours: Callable[[], Result], reference: Callable[[], Result],
                       compare: Callable[[Result, Result], None]) -> None:
    """Both raise (ours naming ``op``), or both return and ``compare(ours, reference)`` passes."""
    expected = run(reference)
    try:
        actual = run(ours)
    except Exception as error:  # not an argument error: always a bug
        raise AssertionError(f"{op} raised {_describe(error)}; PyTorch "
                             + (f"raised {_describe(expected.error)}" if expected.error
                                else "returned")) from error
    if expected.error is not None:
        assert actual.error is not None, (
            f"{op} returned where PyTorch raised {_describe(expected.error)}")
        assert op in str(actual.error), (
            f"{op}'s error does not name the op: {_describe(actual.error)}")
        return
    if actual.error is not None:
        raise AssertionError(f"{op} raised {_describe(actual.error)} where PyTorch "
                             "returned") from actual.error
    assert actual.result is not None and expected.result is not None
    compare(actual.result, expected.result)


def assert_close(actual: torch.Tensor, expected64: torch.Tensor, name: str,
                 scale: float | None = None) -> None:
    """``actual`` (any dtype) against a float64 reference at the dtype's tolerance; NaN and
    inf where the reference has them. ``scale`` makes atol relative to it (sums of many
    products)."""
    assert actual.shape == expected64.shape, (
        f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected64.shape)}")
    rtol, atol = TOLERANCES[actual.dtype]
    if scale is not None:
        atol = rtol * max(scale, 1.0)
    # The reference rounded to the dtype: where it overflows, the result must too.
    expected = expected64.to(actual.dtype).double()
    expected = torch.where(expected.isinf() & expected64.isfinite(), expected, expected64)
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol, equal_nan=True,
                               msg=lambda m: f"{name}: {m}")


def assert_identical(actual: torch.Tensor, expected64: torch.Tensor, name: str) -> None:
    """Exactly the reference's values (for results that are copies of inputs), sign of
    zero and NaN included."""
    assert actual.shape == expected64.shape, (
        f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected64.shape)}")
    got = actual.double()
    torch.testing.assert_close(got, expected64, rtol=0, atol=0, equal_nan=True,
                               msg=lambda m: f"{name}: {m}")
    assert torch.equal(got.signbit() & ~got.isnan(), expected64.signbit() & ~expected64.isnan()), (
        f"{name}: the sign of a zero differs from PyTorch's")


def non_finite_share(t: torch.Tensor) -> float:
    return 0.0 if t.numel() == 0 else (~t.isfinite()).double().mean().item()


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """fp32 convolutions at fp32's precision (PyTorch allows TF32 for them by default)."""
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        yield


def exact_subnormals(provider: str, dtype: torch.dtype) -> bool:
    """Whether ``provider`` can be tested on ``dtype``'s subnormal numbers.

    Not bfloat16 in Triton's interpreter: it converts bfloat16 subnormals to and
    from float32 wrongly (its software conversion clamps their exponent; a GPU
    converts with one exact instruction), so every kernel that upcasts would
    differ there.
    """
    from alexnet_kernels.triton import interpreting

    return not (provider == "triton" and dtype == torch.bfloat16 and interpreting())
