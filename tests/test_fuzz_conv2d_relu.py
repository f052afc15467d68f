"""Fused conv2d + bias + ReLU fuzzed against F.relu(F.conv2d(...)) on every backend
(see tests/fuzz_support.py).

The ReLU mask of the backward is y > 0 of *our* y: where the pre-activation is
within rounding of zero, our y and the float64 reference may fall on different
sides, so the reference gradient is PyTorch's convolution backward of grad_y
masked by our y (after checking that the masks differ only there), as
PyTorch's ReLU backward (``threshold_backward``: a NaN output passes its
gradient) would mask it.
"""

from __future__ import annotations

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
    no_tf32,
    replay,
    run,
)
from helpers import FLOAT_DTYPES, FRONT_END_PROVIDERS, TRITON_DTYPES, emulated_ops, placement
from hypothesis import given
from hypothesis import strategies as st

import alexnet_kernels as ak
from alexnet_kernels.reference import TOLERANCES

FLAWS = ("stride", "padding", "dilation", "groups", "weight", "bias", "shape", "dtype")
# Layouts of the weight: a transposed or sliced weight is as legal as a contiguous one.
WEIGHT_LAYOUTS = ("contiguous", "contiguous", "channels_last", "step_slice", "transposed")


def _pair(data: st.DataObject, name: str, low: int, high: int) -> list[int]:
    return [data.draw(st.integers(low, high), label=f"{name} {axis}") for axis in "hw"]


def draw_call(data: st.DataObject, flaw: str | None, provider: str, raw: bool = False) -> dict:
    """One conv2d_relu call for ``provider``: tensors and arguments, one of them just illegal
    when ``flaw`` names it. ``raw``: arguments as the registered op takes them (pairs, 4-D x)."""
    groups = data.draw(st.integers(1, 3), label="groups")
    cin = groups * data.draw(st.integers(1, 3), label="Cin per group")
    cout = groups * data.draw(st.integers(1, 3), label="Cout per group")
    kernel = _pair(data, "kernel", 1, 4)
    stride = _pair(data, "stride", 1, 3)
    dilation = _pair(data, "dilation", 1, 2)
    padding: object = _pair(data, "padding", 0, 2)
    if not raw and stride == [1, 1] and data.draw(st.booleans(), label="string padding"):
        padding = data.draw(st.sampled_from(["same", "valid"]), label="padding string")
    dims = 4 if raw else data.draw(st.sampled_from([4, 4, 3]), label="dims")
    shape = [data.draw(st.integers(0, 2), label="batch"), cin,
             data.draw(st.integers(1, 9), label="H"), data.draw(st.integers(1, 9), label="W")]
    weight_shape = [cout, cin // groups, *kernel]
    has_bias = data.draw(st.booleans(), label="bias")
    bias_shape = [cout]
    dtype = data.draw(st.sampled_from(TRITON_DTYPES if provider == "triton" else FLOAT_DTYPES),
                      label="dtype")
    subnormals = exact_subnormals(provider, dtype)
    weight_dtype = dtype
    if flaw == "stride":
        stride[data.draw(st.integers(0, 1))] = data.draw(st.sampled_from([0, -1]))
    elif flaw == "padding":
        padding = ([-1, 0] if raw else
                   data.draw(st.sampled_from([[-1, 0], "full", "same"] if stride != [1, 1]
                                             else [[-1, 0], "full"])))
    elif flaw == "dilation":
        dilation[data.draw(st.integers(0, 1))] = 0
    elif flaw == "groups":
        groups = data.draw(st.sampled_from([0, -1, groups + 1]))
    elif flaw == "weight":
        weight_shape[data.draw(st.integers(1, 2))] += 1
    elif flaw == "bias":
        has_bias, bias_shape = True, [cout + 1]
    elif flaw == "shape":
        shape[data.draw(st.integers(1, 3))] = 0
    elif flaw == "dtype":
        weight_dtype = data.draw(st.sampled_from([t for t in FLOAT_DTYPES if t != dtype]))
    scale = (cin * kernel[0] * kernel[1]) ** -0.5
    x = draw_tensor(data, shape[4 - dims:], dtype, subnormals=subnormals)
    # Finite weights and bias: where a NaN or inf weight spreads depends on the algorithm
    # (an implicit GEMM multiplies it by the zeros of out-of-range taps, 0 * inf = NaN;
    # PyTorch's own convolutions differ there), so only x and grad_y carry them.
    weight = draw_tensor(data, weight_shape, weight_dtype, WEIGHT_LAYOUTS, "weight", scale=scale,
                         subnormals=subnormals, specials=False)
    bias = (draw_tensor(data, bias_shape, weight_dtype, ("contiguous", "step_slice"), "bias",
                        subnormals=subnormals, specials=False) if has_bias else None)
    return {"x": x, "weight": weight, "bias": bias, "stride": stride, "padding": padding,
            "dilation": dilation, "groups": groups, "subnormals": subnormals}


def _leaves(call: dict) -> list[torch.Tensor]:
    return [t for t in (call["x"], call["weight"], call["bias"]) if t is not None]


def _reference(call: dict, state: dict, data: st.DataObject) -> Result:
    arguments = (call["stride"], call["padding"], call["dilation"], call["groups"])
    x = call["x"]
    # PyTorch's verdict on the call in its own dtypes, on one image of zeros: F.conv2d
    # skips most of its argument checks on an empty batch, ours checks whatever the batch.
    probe = x.new_zeros((1, *x.shape[1:]) if x.dim() == 4 else x.shape)
    F.conv2d(probe, call["weight"], call["bias"], *arguments)
    leaves = [t.detach().double().requires_grad_() for t in _leaves(call)]
    bias = leaves[2] if len(leaves) == 3 else None
    pre = F.conv2d(leaves[0], leaves[1], bias, *arguments)
    # A finite grad_y too: a NaN in it meets the zero padding in grad_w's sums, and
    # whether 0 * NaN is formed there depends on the algorithm (PyTorch's own float32
    # and float64 convolution backwards differ), as for a non-finite weight.
    state["grad_y"] = draw_tensor(data, pre.shape, call["x"].dtype, label="grad_y",
                                  subnormals=call["subnormals"], specials=False)
    return {"y": F.relu(pre).detach(), "pre": pre, "leaves": leaves}


def _magnitude(t: torch.Tensor) -> float:
    finite = t[t.isfinite()]
    return finite.abs().max().item() if finite.numel() else 1.0


def compare_with(state: dict) -> callable:
    def compare(ours: Result, expected: Result) -> None:
        y64, pre = expected["y"], expected["pre"]
        assert_close(ours["y"], y64, "y", scale=_magnitude(y64))
        # Our mask, once it is known to differ from the reference's only within rounding.
        mask = ours["y"].double() > 0
        mask |= ours["y"].isnan()  # threshold_backward passes a NaN output's gradient
        rtol, _ = TOLERANCES[ours["y"].dtype]
        near_zero = pre.detach().abs() <= rtol * max(_magnitude(y64), 1.0)
        reference_mask = ~(pre.detach() <= 0)
        assert torch.equal((mask != reference_mask) & ~near_zero,
                           torch.zeros_like(mask)), "the ReLU mask differs beyond rounding"
        grad_y = state["grad_y"].double()
        grad_pre = torch.where(mask, grad_y, torch.zeros_like(grad_y))
        leaves = expected["leaves"]
        grads = torch.autograd.grad(pre, leaves, grad_pre, allow_unused=True)
        for name, grad, leaf in zip(("grad_x", "grad_w", "grad_b"), grads, leaves,
                                    strict=False):
            grad = torch.zeros_like(leaf) if grad is None else grad
            if name in ours:
                assert_close(ours[name], grad, name, scale=_magnitude(grad))
    return compare


# ---- the front end: ak.conv2d_relu on native CPU, Triton, CUDA ----------------------

@pytest.mark.parametrize("provider", [p for p in FRONT_END_PROVIDERS
                                      if p in ("native", "triton", "native_cuda")])
@given(data=st.data())
def test_front_end_agrees_with_pytorch(provider: str, data: st.DataObject) -> None:
    where = placement(provider)
    flaw = draw_flaw(data, FLAWS)
    call = draw_call(data, flaw, provider)
    state: dict = {}

    def ours() -> Result:
        leaves = [t.to(where.device).requires_grad_() for t in _leaves(call)]
        bias = leaves[2] if len(leaves) == 3 else None
        y = ak.conv2d_relu(leaves[0], leaves[1], bias, call["stride"], call["padding"],
                           call["dilation"], call["groups"], backend=where.backend)
        y.backward(state["grad_y"].to(where.device))
        names = ("grad_x", "grad_w", "grad_b")
        return {"y": y.detach().cpu(),
                **{name: leaf.grad.cpu() for name, leaf in zip(names, leaves, strict=False)}}

    with where.context, no_tf32():
        check_differential("conv2d_relu", ours, lambda: _reference(call, state, data),
                           compare_with(state))


# ---- the raw ops: torch.ops.alexnet_kernels.* and the emulated CUDA kernels -----------

@pytest.mark.parametrize("provider", ["native", "emulated_cuda"])
@given(data=st.data())
def test_raw_ops_agree_with_pytorch(provider: str, data: st.DataObject) -> None:
    """The registered ops called directly (their own C++ checks); nothing may crash (the
    sanitizer jobs run this test too)."""
    placement("native")
    ops = emulated_ops() if provider == "emulated_cuda" else torch.ops.alexnet_kernels
    flaw = draw_flaw(data, (*FLAWS, "grad_y"), legal_share=2)
    call = draw_call(data, flaw, provider, raw=True)
    # Only what a GEMM over every drawn shape can afford in the emulator.
    arguments = (call["stride"], call["padding"], call["dilation"], call["groups"])
    state: dict = {}

    def ours() -> Result:
        x, weight, bias = call["x"], call["weight"], call["bias"]
        y = ops.conv2d_relu(x, weight, bias, *arguments)
        grad_y = state["grad_y"]
        if flaw == "grad_y":
            grad_y = grad_y.new_ones([grad_y.shape[0] + 1, *grad_y.shape[1:]])
        mask = [True, True, bias is not None]
        grad_x, grad_w, grad_b = ops.conv2d_relu_backward(grad_y, x, weight, y, *arguments,
                                                          mask)
        result = {"y": y, "grad_x": grad_x, "grad_w": grad_w}
        if bias is not None:
            result["grad_b"] = grad_b
        return result

    with no_tf32():
        expected = run(lambda: _reference(call, state, data))
        if flaw == "grad_y" and expected.error is None:
            with pytest.raises(RuntimeError, match="conv2d_relu"):
                ours()
            return
        check_differential("conv2d_relu", ours, lambda: replay(expected), compare_with(state))
