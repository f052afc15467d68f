"""Dropout fuzzed on every backend against F.dropout's rules with the documented mask.

The mask differs from F.dropout's by design (another generator), so the
reference is F.dropout's formula, ``x * mask / (1 - p)`` in float64, with the
mask computed independently (``cases.dropout``) from the documented convention
(``alexnet_kernels/ops/dropout.py``): Philox4x32-10 in numpy, the seed drawn
from the call's CPU generator, elements numbered in memory order. NaN and inf
follow F.dropout: a dropped NaN or inf gives NaN (it is multiplied by zero).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cases.dropout import PHILOX_KAT, convention_mask, drawn_seed, philox_words
from fuzz_support import (
    Result,
    assert_close,
    check_differential,
    draw_tensor,
    exact_subnormals,
)
from helpers import FLOAT_DTYPES, FRONT_END_PROVIDERS, TRITON_DTYPES, emulated_ops, placement
from hypothesis import given
from hypothesis import strategies as st

import alexnet_kernels as ak


def memory_positions(x: torch.Tensor) -> torch.Tensor:
    """Each element's position in the memory order of ``torch.empty_like(x)`` (the
    documented layout of the output), as an int64 tensor of x's shape."""
    strides = torch.empty_like(x).stride()
    position = torch.zeros(x.shape, dtype=torch.int64)
    for axis, (size, stride) in enumerate(zip(x.shape, strides, strict=True)):
        view = [1] * x.dim()
        view[axis] = size
        position = position + torch.arange(size).view(view) * stride
    return position


def expected_scale(x: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """F.dropout's factor per element of x for the documented mask: 1 / (1 - p) or 0."""
    keep = torch.full(x.shape, 1.0 / (1.0 - p), dtype=torch.float64)
    return torch.where(expected_mask(x, seed, p), keep, torch.zeros_like(keep))


def expected_mask(x: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    positions = memory_positions(x)
    flat = convention_mask(x.numel(), seed, 0, p)
    return flat[positions.reshape(-1)].reshape(x.shape) if x.numel() else flat.reshape(x.shape)


@pytest.mark.parametrize("case", range(len(PHILOX_KAT)))
def test_numpy_philox_known_answers(case: int) -> None:
    counter, key, expected = PHILOX_KAT[case]
    words = philox_words(np.array([counter], dtype=np.uint64), key)
    assert [int(w) for w in words[0]] == list(expected)


def draw_p(data: st.DataObject, legal: bool) -> float:
    if legal:
        return data.draw(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 1.0), label="p")
    return data.draw(st.sampled_from([-1e-9, 1.0 + 1e-9, -0.5, 2.0, math.nan, math.inf]),
                     label="illegal p")


def draw_shape(data: st.DataObject) -> tuple[int, ...]:
    dim = data.draw(st.integers(0, 4), label="dims")
    return tuple(data.draw(st.integers(0, 6), label="size") for _ in range(dim))


def same_strides(x: torch.Tensor, zeros: bool = False) -> torch.Tensor:
    """A new tensor over a copy of x's storage (or over zeros) with x's very strides (a
    clone would make an expanded x dense): what an in-place call writes into."""
    length = x.untyped_storage().nbytes() // x.element_size()
    storage = (torch.zeros(length, dtype=x.dtype) if zeros
               else x.detach().as_strided((length,), (1,), 0).clone())
    return storage.as_strided(x.shape, x.stride(), x.storage_offset())


def _reference(x: torch.Tensor, p: float, training: bool, inplace: bool, seed: int,
               state: dict, data: st.DataObject) -> Result:
    # Raises where PyTorch refuses the call, in place on x's own strides too.
    F.dropout(same_strides(x, zeros=True), p, training, inplace)
    if training and 0.0 < p < 1.0 and x.numel():
        scale = expected_scale(x, seed, p)
    else:
        scale = torch.full(x.shape, 0.0 if training and p == 1.0 else 1.0, dtype=torch.float64)
    state["grad_y"] = draw_tensor(data, x.shape, x.dtype, label="grad_y",
                                  subnormals=state.get("subnormals", True))
    return {"y": x.double() * scale, "grad_x": state["grad_y"].double() * scale}


def compare(ours: Result, expected: Result) -> None:
    assert_close(ours["y"], expected["y"], "y")
    if "grad_x" in ours:
        assert_close(ours["grad_x"], expected["grad_x"], "grad_x")


@pytest.mark.parametrize("provider", FRONT_END_PROVIDERS)
@given(data=st.data())
def test_front_end_agrees_with_pytorch(provider: str, data: st.DataObject) -> None:
    where = placement(provider)
    legal = data.draw(st.integers(0, 3), label="legal") > 0
    p = draw_p(data, legal)
    training = data.draw(st.booleans() | st.just(True), label="training")
    inplace = data.draw(st.booleans(), label="inplace")
    dtypes = TRITON_DTYPES if provider == "triton" else FLOAT_DTYPES
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    state: dict = {"subnormals": exact_subnormals(provider, dtype)}
    x = draw_tensor(data, draw_shape(data), dtype, subnormals=state["subnormals"])
    generator_seed = data.draw(st.integers(0, 2**63 - 1), label="generator seed")

    def ours() -> Result:
        with where.context:
            if inplace:  # no gradient: an in-place call on a leaf is refused by autograd
                source = same_strides(x).to(where.device)
            else:
                source = x.to(where.device).requires_grad_()
            generator = torch.Generator(where.device).manual_seed(generator_seed)
            y = ak.dropout(source, p, training, inplace, generator=generator,
                           backend=where.backend)
            # Documented: x itself in place, and when there is nothing to drop.
            assert (y is source) == (inplace or not training or p == 0.0 or x.numel() == 0)
            assert y.shape == x.shape and y.dtype == x.dtype
            if inplace:
                return {"y": y.cpu()}
            y.backward(state["grad_y"].to(where.device))
        return {"y": y.detach().cpu(), "grad_x": source.grad.cpu()}

    check_differential(
        "dropout", ours,
        lambda: _reference(x, p, training, inplace, drawn_seed(generator_seed), state, data),
        compare)


def test_in_place_on_an_expanded_tensor_is_refused_as_pytorch_refuses() -> None:
    x = torch.randn(1, 5).expand(3, 5)
    with pytest.raises(RuntimeError):
        F.dropout(x, 0.5, inplace=True)
    with pytest.raises(RuntimeError, match="dropout"):
        ak.dropout(x, 0.5, inplace=True, backend="native")


@pytest.mark.parametrize("provider", ["native", "emulated_cuda"])
@given(data=st.data())
def test_raw_op_agrees_with_the_convention(provider: str, data: st.DataObject) -> None:
    """``alexnet_kernels::dropout(x, seed_offset, p)`` called directly, incl. a bad
    seed_offset or p: an argument error, never a crash or a silently wrong mask."""
    placement("native")
    ops = emulated_ops() if provider == "emulated_cuda" else torch.ops.alexnet_kernels
    flaw = data.draw(st.sampled_from([None] * 6 + ["p", "seed_offset"]), label="flaw")
    p = draw_p(data, flaw != "p")
    x = draw_tensor(data, draw_shape(data), data.draw(st.sampled_from(FLOAT_DTYPES)))
    seed = data.draw(st.integers(0, 2**64 - 1), label="seed")
    seed_offset = torch.tensor([seed - 2**64 if seed >= 2**63 else seed, 0], dtype=torch.int64)
    if flaw == "seed_offset":
        seed_offset = data.draw(st.sampled_from([seed_offset[:1], seed_offset.int(),
                                                 seed_offset.double(), seed_offset.view(1, 2),
                                                 torch.cat([seed_offset, seed_offset])]))
    outcome_error = None
    try:
        y = ops.dropout(x, seed_offset, p)
    except RuntimeError as error:
        outcome_error = error
    if flaw is not None or not 0.0 < p < 1.0:
        # p = 0 and p = 1 are the front end's to handle (it never calls the op then); the
        # op itself may compute them or refuse them, but never return garbage.
        if outcome_error is None:
            assert flaw is None, f"accepted a bad {flaw}"
            assert_close(y, x.double() * (0.0 if p == 1.0 else 1.0), "y")
        else:
            assert "dropout" in str(outcome_error)
        return
    assert outcome_error is None, outcome_error
    assert_close(y, x.double() * expected_scale(x, seed, p), "y")
