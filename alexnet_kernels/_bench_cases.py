"""The main job's cases: AlexNet's shapes per op, the accuracy check and the byte model.

Accuracy: our output and input-gradient against PyTorch's reference computed in
float64 from the same (already rounded) inputs, with the per-dtype tolerances
of :data:`alexnet_kernels.reference.TOLERANCES`. Dropout's mask is random, so
its reference is the formula ``x * mask / (1 - p)`` with the op's own mask
(``mask = y != 0``), and the fraction of kept elements must be close to 1 - p.

Byte model: the bytes that must cross memory for each kernel of a sequence,
every tensor it reads read once and every tensor it writes written once. Ours
is one kernel per direction; PyTorch eager is the kernel sequence listed in
``_EAGER`` (taken from the profiler's aten ops for torch 2.14), each kernel at
that same minimum, so eager's figure is a lower bound for eager too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from alexnet_kernels import ops, reference
from alexnet_kernels.ops.max_pool import pool_output_size

LRN_PARAMS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}  # the paper's
POOL_PARAMS = {"kernel_size": 3, "stride": 2}  # overlapping 3x3/2 pooling
DROPOUT_P = 0.5
_PARAMS: dict[str, dict[str, object]] = {
    "lrn": LRN_PARAMS, "max_pool2d": POOL_PARAMS, "dropout": {"p": DROPOUT_P}}


@dataclass(frozen=True)
class Case:
    """One op at one of AlexNet's layer shapes (per sample, without the batch)."""

    op: str
    layer: str
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.op} {self.layer} {'x'.join(map(str, self.shape))}"

    def reference(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """PyTorch's implementation (eager, and what torch.compile compiles)."""
        return functools.partial(getattr(reference, self.op), **_PARAMS[self.op])

    def ours(self, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return functools.partial(getattr(ops, self.op), **_PARAMS[self.op], backend=backend)


CASES = (
    Case("lrn", "conv1", (96, 55, 55)),
    Case("lrn", "conv2", (256, 27, 27)),
    Case("max_pool2d", "pool1", (96, 55, 55)),
    Case("max_pool2d", "pool2", (256, 27, 27)),
    Case("max_pool2d", "pool5", (256, 13, 13)),
    Case("dropout", "conv1", (96, 55, 55)),
    Case("dropout", "fc6-input", (9216,)),
    Case("dropout", "fc7-input", (4096,)),
)


def make_input(case: Case, batch: int, dtype: torch.dtype, channels_last: bool,
               device: torch.device, seed: int = 0) -> torch.Tensor:
    """Normal samples of shape (batch, *case.shape); channels_last applies to 4-D inputs."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *case.shape), generator=generator, dtype=torch.float64)
    x = x.to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# --- accuracy -----------------------------------------------------------------------------


@dataclass
class Accuracy:
    case: str
    provider: str
    dtype: str
    output_max_abs: float
    output_max_rel: float
    grad_max_abs: float
    grad_max_rel: float
    keep_fraction: float | None  # dropout only
    passed: bool


def _errors(actual: torch.Tensor, expected64: torch.Tensor,
            tolerance: tuple[float, float]) -> tuple[float, float, bool]:
    """Max abs error, max relative error (relative to max(|expected|, atol), so that
    near-zero references do not blow it up) and whether every element is within
    atol + rtol * |expected|."""
    rtol, atol = tolerance
    diff = (actual.double() - expected64).abs()
    if diff.numel() == 0:
        return 0.0, 0.0, True
    scale = expected64.abs()
    passed = bool((diff <= atol + rtol * scale).all())  # NaN fails
    return diff.max().item(), (diff / scale.clamp_min(atol)).max().item(), passed


def _keep_fraction_plausible(kept: float, n: int, p: float) -> bool:
    """Within 6 standard deviations of a Binomial(n, 1 - p) fraction."""
    return abs(kept - (1.0 - p)) <= 6.0 * math.sqrt(p * (1.0 - p) / max(n, 1)) + 1.0 / max(n, 1)


def _expected(case: Case, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """The float64 reference output and input-gradient for ours having produced y."""
    if case.op == "dropout":
        # Ours draws its own mask: the reference applies that mask.
        mask = (y.detach() != 0).double()
        scale = 1.0 / (1.0 - DROPOUT_P)
        return x.double() * mask * scale, g.double() * mask * scale, mask.mean().item()
    x64 = x.double().requires_grad_()
    y64 = case.reference()(x64)
    y64.backward(g.double())
    return y64.detach(), x64.grad, None


def check_accuracy(case: Case, fn: Callable[[torch.Tensor], torch.Tensor], provider: str,
                   x: torch.Tensor) -> Accuracy:
    """Runs fn forward and backward on x and compares with the float64 reference."""
    tolerance = reference.TOLERANCES[x.dtype]
    xg = x.detach().clone().requires_grad_()
    y = fn(xg)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64).to(device=y.device, dtype=y.dtype)
    y.backward(g)
    y64, grad64, kept = _expected(case, x, y, g)
    out_abs, out_rel, out_ok = _errors(y.detach(), y64, tolerance)
    grad_abs, grad_rel, grad_ok = _errors(xg.grad, grad64, tolerance)
    passed = out_ok and grad_ok and (
        kept is None or _keep_fraction_plausible(kept, y.numel(), DROPOUT_P))
    return Accuracy(case.name, provider, str(x.dtype).removeprefix("torch."), out_abs, out_rel,
                    grad_abs, grad_rel, kept, passed)


# --- byte model ---------------------------------------------------------------------------

# A kernel: (name, tensors read, tensors written), each tensor a letter whose
# size in bytes _tensor_bytes gives for a case:
#   X the op's input (and grad_x), Y its output (and grad_y), P LRN's input
#   padded by size - 1 channels, I int64 indices per pooled output, A our
#   uint8 argmax per pooled output, M a bool mask per element.
Kernel = tuple[str, str, str]

_OURS: dict[str, tuple[list[Kernel], list[Kernel]]] = {
    # The backward reads grad_y, x and y (saved by the forward, already in memory).
    "lrn": ([("lrn", "X", "Y")], [("lrn_backward", "YXY", "X")]),
    "max_pool2d": ([("max_pool2d", "X", "YA")], [("max_pool2d_backward", "YA", "X")]),
    # The mask is regenerated from (seed, offset) in the backward, never stored.
    "dropout": ([("dropout", "X", "Y")], [("dropout (grad_y, same mask)", "Y", "X")]),
}

# PyTorch eager's kernels (aten ops under the profiler, torch 2.14). The LRN
# forward is F.local_response_norm: x*x, pad the channels, avg_pool3d over
# them, *alpha, +k, **beta, x/div; its backward is autograd through each.
_LRN_EAGER_FORWARD = [
    ("mul x*x", "XX", "X"), ("constant_pad_nd", "X", "P"), ("avg_pool3d", "P", "X"),
    ("mul alpha", "X", "X"), ("add k", "X", "X"), ("pow beta", "X", "X"),
    ("div x/d", "XX", "Y"),
]
_LRN_EAGER_BACKWARD = [
    # DivBackward0: g/d; -g * ((x/d)/d)
    ("div g/d", "YX", "X"), ("div x/d", "XX", "X"), ("div (x/d)/d", "XX", "X"),
    ("neg g", "Y", "X"), ("mul", "XX", "X"),
    # PowBackward0: g * (beta * base**(beta-1)); MulBackward0: g * alpha
    ("pow beta-1", "X", "X"), ("mul beta", "X", "X"), ("mul g", "XX", "X"),
    ("mul alpha", "X", "X"),
    # AvgPool3DBackward0, then ConstantPadNdBackward0 copies the interior out.
    ("avg_pool3d_backward", "X", "P"), ("constant_pad_nd (slice)", "X", "X"),
    # MulBackward0 of x*x (both operands), then x's three gradients summed.
    ("mul g*x", "XX", "X"), ("mul g*x", "XX", "X"), ("add_", "XX", "X"), ("add_", "XX", "X"),
]
_EAGER: dict[tuple[str, str], tuple[list[Kernel], list[Kernel]]] = {
    ("lrn", "cpu"): (_LRN_EAGER_FORWARD, _LRN_EAGER_BACKWARD),
    ("lrn", "cuda"): (_LRN_EAGER_FORWARD, _LRN_EAGER_BACKWARD),
    # Forward writes int64 indices even under no_grad; the backward's zero-fill
    # of grad_x is not counted (each kernel at its minimum).
    ("max_pool2d", "cpu"): ([("max_pool2d_with_indices", "X", "YI")],
                            [("max_pool2d_with_indices_backward", "YI", "X")]),
    ("max_pool2d", "cuda"): ([("max_pool2d_with_indices", "X", "YI")],
                             [("max_pool2d_with_indices_backward", "YI", "X")]),
    # CPU: noise = empty_like(x).bernoulli_(1-p).div_(1-p); y = x * noise, the
    # noise saved for MulBackward0's g * noise.
    ("dropout", "cpu"): (
        [("bernoulli_", "", "X"), ("div_ 1-p", "X", "X"), ("mul x*noise", "XX", "Y")],
        [("mul g*noise", "YX", "X")]),
    # CUDA: the fused native_dropout writes a bool mask, its backward reads it.
    ("dropout", "cuda"): ([("native_dropout", "X", "YM")],
                          [("native_dropout_backward", "YM", "X")]),
}


def _tensor_bytes(case: Case, batch: int, itemsize: int) -> dict[str, int]:
    elements = batch * math.prod(case.shape)
    sizes = {"X": elements * itemsize, "M": elements}
    if case.op == "lrn":
        channels, spatial = case.shape[0], math.prod(case.shape[1:])
        padded = batch * (channels + int(LRN_PARAMS["size"]) - 1) * spatial
        sizes.update(Y=sizes["X"], P=padded * itemsize)
    elif case.op == "max_pool2d":
        kernel, stride = int(POOL_PARAMS["kernel_size"]), int(POOL_PARAMS["stride"])
        outputs = batch * case.shape[0] * math.prod(
            pool_output_size(n, kernel, stride, 0, 1, False) for n in case.shape[1:])
        sizes.update(Y=outputs * itemsize, I=outputs * 8, A=outputs)
    else:
        sizes["Y"] = sizes["X"]
    return sizes


@dataclass
class Traffic:
    """Bytes moved per direction: {"forward": ..., "backward": ...} for ours and eager."""

    ours: dict[str, int]
    eager: dict[str, int]
    eager_kernels: dict[str, list[str]]


def _bytes(kernels: list[Kernel], sizes: dict[str, int]) -> int:
    return sum(sizes[t] for _, read, written in kernels for t in read + written)


def traffic(case: Case, batch: int, itemsize: int, device_type: str) -> Traffic:
    """The byte model of ``case`` for a batch of ``itemsize``-byte elements."""
    sizes = _tensor_bytes(case, batch, itemsize)
    ours, eager = _OURS[case.op], _EAGER[(case.op, device_type)]
    directions = ("forward", "backward")
    return Traffic(
        ours={d: _bytes(k, sizes) for d, k in zip(directions, ours, strict=True)},
        eager={d: _bytes(k, sizes) for d, k in zip(directions, eager, strict=True)},
        eager_kernels={d: [name for name, _, _ in k]
                       for d, k in zip(directions, eager, strict=True)},
    )
