"""LRN fuzzed against F.local_response_norm on every backend (see tests/fuzz_support.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fuzz_support import (
    Result,
    assert_close,
    check_differential,
    draw_flaw,
    draw_tensor,
    exact_subnormals,
)
from helpers import FLOAT_DTYPES, FRONT_END_PROVIDERS, TRITON_DTYPES, emulated_ops, placement
from hypothesis import given
from hypothesis import strategies as st

import alexnet_kernels as ak

FLAWS = ("size", "hyperparameter", "shape")
# Exponents the kernels may special-case, and AlexNet's k.
SPECIAL_BETAS = (0.75, 0.5, 1.0, 0.0)


def draw_call(data: st.DataObject, flaw: str | None) -> tuple[tuple[int, ...], tuple]:
    """(x's shape, (size, alpha, beta, k)), one of them just illegal when ``flaw`` says."""
    dim = data.draw(st.integers(3, 5), label="dims")
    shape = [data.draw(st.integers(0, 3), label="batch"), data.draw(st.integers(0, 12), label="C")]
    shape += [data.draw(st.integers(0, 6), label="spatial") for _ in range(dim - 2)]
    if flaw == "shape":
        shape = shape[:data.draw(st.integers(0, 2), label="too few dims")]
    size = data.draw(st.integers(1, 9), label="size")
    if flaw == "size":
        size = data.draw(st.sampled_from([0, -1]), label="illegal size")
    # Not below 1e-6: a smaller alpha underflows in float32, and 0 * inf is NaN where the
    # float64 reference's tiny * inf is inf (PyTorch's own float32 LRN gives NaN too).
    alpha = data.draw(st.just(0.0) | st.floats(1e-6, 2.0) | st.just(1e-4), label="alpha")
    beta = data.draw(st.sampled_from(SPECIAL_BETAS) | st.floats(0.05, 2.0), label="beta")
    k = data.draw(st.floats(0.5, 3.0) | st.just(2.0), label="k")
    return tuple(shape), (size, alpha, beta, k)


def compare(ours: Result, expected: Result) -> None:
    """y exactly as PyTorch's, NaN and inf included. grad_x too, except where a NaN or
    inf input makes PyTorch's gradient NaN and ours is not: PyTorch differentiates its
    composite x / (k + alpha * avg(x^2))^beta step by step, and a window holding an
    inf multiplies 0 by inf on the way (-g x / div^2 = 0, times beta * base^(beta - 1) =
    inf); the analytic gradient, g S^-beta - 2 alpha beta / size * x * sum(g y / S),
    gets 0 there. Ours is never NaN where PyTorch's is finite."""
    assert_close(ours["y"], expected["y"], "y")
    if "grad_x" not in ours:
        return
    grad, reference = ours["grad_x"], expected["grad_x"]
    if expected["finite_inputs"]:
        assert_close(grad, reference, "grad_x")
        return
    pytorch_nan_only = reference.isnan() & ~grad.isnan()
    assert_close(torch.where(pytorch_nan_only, torch.zeros_like(grad), grad),
                 torch.where(pytorch_nan_only, torch.zeros_like(reference), reference),
                 "grad_x")


def _reference(x: torch.Tensor, params: tuple, state: dict, data: st.DataObject) -> Result:
    if x.dim() >= 3 and x.numel() == 0:
        # F.local_response_norm returns an empty input before it looks at size; ours
        # checks its arguments whatever the batch, so the same call on one element decides.
        F.local_response_norm(torch.ones([1] * x.dim(), dtype=torch.float64), *params)
    # Contiguous: F.local_response_norm views 4-D and wider inputs in a way that fails
    # on some strides (the values, not the layout, define the result).
    x64 = x.detach().double().contiguous().requires_grad_()
    y64 = F.local_response_norm(x64, *params)
    state["grad_y"] = draw_tensor(data, y64.shape, x.dtype, label="grad_y",
                                  subnormals=state.get("subnormals", True))
    y64.backward(state["grad_y"].double())
    grad = x64.grad if x64.grad is not None else torch.zeros_like(x64)
    finite_inputs = bool(x.isfinite().all() and state["grad_y"].isfinite().all())
    return {"y": y64.detach(), "grad_x": grad, "finite_inputs": finite_inputs}


@pytest.mark.parametrize("provider", FRONT_END_PROVIDERS)
@given(data=st.data())
def test_front_end_agrees_with_pytorch(provider: str, data: st.DataObject) -> None:
    where = placement(provider)
    flaw = draw_flaw(data, FLAWS)
    shape, params = draw_call(data, flaw)
    dtypes = TRITON_DTYPES if provider == "triton" else FLOAT_DTYPES
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    state: dict = {"subnormals": exact_subnormals(provider, dtype)}
    x = draw_tensor(data, shape, dtype, subnormals=state["subnormals"])

    def ours() -> Result:
        with where.context:
            xd = x.to(where.device).requires_grad_()
            y = ak.lrn(xd, *params, backend=where.backend)
            y.backward(state["grad_y"].to(where.device))
        return {"y": y.detach().cpu(), "grad_x": xd.grad.cpu()}

    check_differential("lrn", ours, lambda: _reference(x, params, state, data), compare)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", ["alpha", "beta", "k"])
def test_non_finite_hyperparameters_are_refused(name: str, value: float) -> None:
    """A deliberate difference: PyTorch computes with a non-finite alpha, beta or k
    (all NaN, all zero or inf-by-zero garbage); ours refuses it, naming the argument."""
    params = {"size": 3, "alpha": 1e-4, "beta": 0.75, "k": 2.0, name: value}
    with pytest.raises(ValueError, match=f"lrn: {name} must be finite"):
        ak.lrn(torch.randn(1, 4, 2, 2), **params)
    F.local_response_norm(torch.randn(1, 4, 2, 2), **params)  # PyTorch computes


@pytest.mark.parametrize("provider", ["native", "emulated_cuda"])
@given(data=st.data())
def test_raw_ops_agree_with_pytorch(provider: str, data: st.DataObject) -> None:
    """The registered ops called directly (their own C++ checks), incl. a backward given a
    grad_y or y of another shape: an argument error, never a crash."""
    ops = emulated_ops() if provider == "emulated_cuda" else torch.ops.alexnet_kernels
    placement("native")
    flaw = draw_flaw(data, (*FLAWS[::2], "grad_y"))
    shape, params = draw_call(data, flaw)
    x = draw_tensor(data, shape, data.draw(st.sampled_from(FLOAT_DTYPES)))
    state: dict = {}

    def ours() -> Result:
        y = ops.lrn(x, *params)
        grad_y = state["grad_y"]
        if flaw == "grad_y":
            grad_y = grad_y.new_ones([grad_y.shape[0] + 1, *grad_y.shape[1:]])
        return {"y": y, "grad_x": ops.lrn_backward(grad_y, x, y, *params)}

    if flaw == "grad_y":
        _reference(x, params, state, data)
        with pytest.raises(RuntimeError, match="lrn"):
            ours()
        return
    check_differential("lrn", ours, lambda: _reference(x, params, state, data), compare)
