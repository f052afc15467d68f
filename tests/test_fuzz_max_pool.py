"""Max pooling fuzzed against F.max_pool2d on every backend (see tests/fuzz_support.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cases.max_pool import reference_gradient_of
from fuzz_support import (
    Result,
    arrange,
    assert_close,
    assert_identical,
    check_differential,
    draw_flaw,
    draw_tensor,
    exact_subnormals,
    run,
)
from helpers import FLOAT_DTYPES, FRONT_END_PROVIDERS, TRITON_DTYPES, emulated_ops, placement
from hypothesis import given
from hypothesis import strategies as st

import alexnet_kernels as ak
from alexnet_kernels.ops.max_pool import PoolGeometry, argmax_to_indices

FLAWS = ("kernel_size", "stride", "padding", "dilation", "shape", "form")


def _draw_pair(data: st.DataObject, name: str, low: int, high: int) -> list[int]:
    return [data.draw(st.integers(low, high), label=f"{name} {axis}") for axis in "hw"]


def _just_outside(data: st.DataObject, pair: list[int], illegal: list[int], name: str
                  ) -> list[int]:
    axis = data.draw(st.integers(0, 1), label=f"{name} flawed axis")
    pair = list(pair)
    pair[axis] = data.draw(st.sampled_from(illegal), label=f"illegal {name}")
    return pair


def draw_window(data: st.DataObject, flaw: str | None) -> dict:
    """Normalised window arguments (pairs), one of them just illegal when ``flaw`` names it."""
    kernel = _draw_pair(data, "kernel", 1, 4)
    if flaw == "kernel_size":
        kernel = _just_outside(data, kernel, [0, -1], "kernel")
    stride = _draw_pair(data, "stride", 1, 4)
    if flaw == "stride":
        stride = _just_outside(data, stride, [0, -2], "stride")
    padding = [data.draw(st.integers(0, max(k, 0) // 2), label="padding") for k in kernel]
    if flaw == "padding":
        axis = data.draw(st.integers(0, 1), label="padding flawed axis")
        padding[axis] = data.draw(st.sampled_from([max(kernel[axis], 0) // 2 + 1, -1]),
                                  label="illegal padding")
    dilation = _draw_pair(data, "dilation", 1, 3)
    if flaw == "dilation":
        dilation = _just_outside(data, dilation, [0, -1], "dilation")
    return {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation,
            "ceil_mode": data.draw(st.booleans(), label="ceil_mode")}


def draw_shape(data: st.DataObject, flaw: str | None, dims: tuple[int, ...] = (4, 4, 3)
               ) -> tuple[int, ...]:
    dim = data.draw(st.sampled_from(dims), label="dims")
    shape = [data.draw(st.integers(0, 3), label="batch"), data.draw(st.integers(1, 5), label="C"),
             data.draw(st.integers(1, 12), label="H"), data.draw(st.integers(1, 12), label="W")]
    if flaw == "shape":
        axis = data.draw(st.integers(1, 3), label="empty axis")
        shape[axis] = 0
    return tuple(shape[4 - dim:])


def _front_end_form(data: st.DataObject, pair: list[int], flaw: bool):
    """How a user may pass a pair: an int when both are equal, a tuple, a list, a 1-tuple;
    when ``flaw``, a form PyTorch refuses (three elements, a float)."""
    if flaw:
        return data.draw(st.sampled_from([(*pair, pair[0]), float(pair[0])]), label="bad form")
    forms = [tuple(pair), list(pair)]
    if pair[0] == pair[1]:
        forms += [pair[0], (pair[0],)]
    return data.draw(st.sampled_from(forms), label="form")


def compare(ours: Result, expected: Result) -> None:
    assert_identical(ours["y"], expected["y"], "y")
    if "indices" in ours:
        torch.testing.assert_close(ours["indices"], expected["indices"], rtol=0, atol=0,
                                   msg=lambda m: f"indices: {m}")
    if "grad_x" in ours:
        assert_close(ours["grad_x"], expected["grad_x"], "grad_x")


def _reference(x: torch.Tensor, arguments: tuple, train: bool, state: dict, data,
               want_indices: bool = True) -> Result:
    x64 = x.detach().double().requires_grad_(train)
    # The call as the user made it (PyTorch checks some arguments differently without
    # indices), then the indices to compare ours with.
    y64 = F.max_pool2d(x64, *arguments, return_indices=want_indices)
    if want_indices:
        y64, indices = y64
    else:
        indices = F.max_pool2d(x64.detach(), *arguments, return_indices=True)[1]
    result = {"y": y64.detach(), "indices": indices}
    if train:
        state["grad_y"] = draw_tensor(data, y64.shape, x.dtype, label="grad_y",
                                      subnormals=state.get("subnormals", True))
        y64.backward(reference_gradient_of(state["grad_y"], x, *arguments))
        result["grad_x"] = x64.grad
    return result


# ---- the front end: ak.max_pool2d on native CPU (each instruction set), Triton, CUDA ----

@pytest.mark.parametrize("provider", FRONT_END_PROVIDERS)
@given(data=st.data())
def test_front_end_agrees_with_pytorch(provider: str, data: st.DataObject) -> None:
    where = placement(provider)
    flaw = draw_flaw(data, FLAWS)
    window = draw_window(data, flaw)
    dtypes = TRITON_DTYPES if provider == "triton" else FLOAT_DTYPES
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    state: dict = {"subnormals": exact_subnormals(provider, dtype)}
    x = draw_tensor(data, draw_shape(data, flaw), dtype, subnormals=state["subnormals"])
    forms = [_front_end_form(data, window[name], flaw == "form" and name == "kernel_size")
             for name in ("kernel_size", "stride", "padding", "dilation")]
    if data.draw(st.booleans(), label="default stride"):
        forms[1] = None
    arguments = (*forms, window["ceil_mode"])
    mode = data.draw(st.sampled_from(["train", "indices", "values"]), label="mode")
    train, want_indices = mode == "train", mode != "values"

    def ours() -> Result:
        with where.context:
            xd = x.to(where.device).requires_grad_(train)
            with torch.set_grad_enabled(train):
                out = ak.max_pool2d(xd, *arguments, return_indices=want_indices,
                                    backend=where.backend)
            y, indices = out if want_indices else (out, None)
            result = {"y": y.detach().cpu()}
            if indices is not None:
                result["indices"] = indices.cpu()
            if train and "grad_y" in state:
                y.backward(state["grad_y"].to(where.device))
                result["grad_x"] = xd.grad.cpu()
        return result

    check_differential("max_pool2d", ours,
                       lambda: _reference(x, arguments, train, state, data, want_indices),
                       compare)


# ---- the raw ops: torch.ops.alexnet_kernels.* and the emulated CUDA kernels -----------

RAW_FLAWS = (*FLAWS[:5], "length", "argmax", "grad_y")


def _raw_ops(provider: str):
    if provider == "emulated_cuda":
        return emulated_ops()
    placement(provider)  # fails without the compiled library
    return torch.ops.alexnet_kernels


@pytest.mark.parametrize("provider", ["native", "emulated_cuda"])
@given(data=st.data())
def test_raw_ops_agree_with_pytorch(provider: str, data: st.DataObject) -> None:
    """The registered ops take normalised arguments straight from a caller: their own C++
    checks must refuse what PyTorch refuses, and nothing may crash (the sanitizer jobs
    run this test too)."""
    ops = _raw_ops(provider)
    flaw = draw_flaw(data, RAW_FLAWS, legal_share=2)
    window = draw_window(data, flaw)
    if flaw == "length":
        name = data.draw(st.sampled_from(["kernel_size", "stride", "padding", "dilation"]))
        window[name] = window[name][:1] if data.draw(st.booleans()) else [*window[name], 1]
    shape = draw_shape(data, flaw, dims=(4,) if flaw != "shape" else (4, 3))
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    x = draw_tensor(data, shape, dtype)
    arguments = [window[n] for n in ("kernel_size", "stride", "padding", "dilation",
                                     "ceil_mode")]
    forward = run(lambda: dict(zip(("y", "argmax"), ops.max_pool2d(x, *arguments),
                                   strict=True)))
    if flaw in ("argmax", "grad_y") and forward.result is not None:
        _corrupted_backward(data, ops, forward.result, x, arguments, flaw)
        return
    state: dict = {}

    def ours() -> Result:
        if forward.error is not None:
            raise forward.error
        y, argmax = forward.result["y"], forward.result["argmax"]
        geometry = PoolGeometry(x.shape, *arguments)
        grad_x = ops.max_pool2d_backward(state["grad_y"], argmax, list(x.shape), *arguments)
        return {"y": y, "indices": argmax_to_indices(argmax, geometry), "grad_x": grad_x}

    check_differential("max_pool2d", ours,
                       lambda: _reference(x, tuple(arguments), True, state, data), compare)


def _corrupted_backward(data: st.DataObject, ops, forward: Result, x: torch.Tensor,
                        arguments: list, flaw: str) -> None:
    """A backward given an argmax that no forward produced, or a grad_y of another shape or
    layout: it raises an argument error or returns a gradient of x's shape — never crashes
    or writes outside it."""
    argmax, y = forward["argmax"], forward["y"]
    grad_y = draw_tensor(data, y.shape, x.dtype, label="grad_y")
    if flaw == "argmax":
        high = 255 if argmax.dtype == torch.uint8 else 2**31 - 1
        argmax = torch.randint(0, high + 1, argmax.shape, dtype=torch.int64,
                               generator=torch.Generator().manual_seed(
                                   data.draw(st.integers(0, 2**16), label="argmax seed"))
                               ).to(argmax.dtype)
        argmax = arrange(argmax, data.draw(st.sampled_from(["contiguous", "channels_last"])))
    else:
        extra = data.draw(st.integers(0, 3), label="grad_y axis")
        grad_y = grad_y.new_ones([*grad_y.shape[:extra], grad_y.shape[extra] + 1,
                                  *grad_y.shape[extra + 1:]])
    outcome = run(lambda: ops.max_pool2d_backward(grad_y, argmax, list(x.shape), *arguments))
    if outcome.error is None:
        assert outcome.result.shape == x.shape
        assert flaw == "argmax", "a grad_y of the wrong shape was accepted"
