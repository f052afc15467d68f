"""The main job's cases: AlexNet's shapes per op and end to end, the accuracy check and the
byte model.

A case builds :class:`Program` s — a callable with the tensors whose gradients
its backward computes (x always; weights too for convolutions and networks) —
for PyTorch (eager, and what torch.compile compiles), for ours on a backend, and
for the float64 reference. Weights come from a fixed seed, so every program of a
case holds the same (rounded) values.

Accuracy: our output and every gradient against PyTorch's reference computed in
float64 from the same rounded inputs and weights, with the per-dtype tolerances
of :data:`alexnet_kernels.reference.TOLERANCES`. Convolutions sum many products
per output, so their absolute tolerance is scaled by the reference's largest
magnitude (as the tests do), and their reference backward uses our ReLU mask
(y > 0). Dropout's mask is random, so its reference is the formula
``x * mask / (1 - p)`` with the op's own mask (``mask = y != 0``), and the
fraction of kept elements must be close to 1 - p.

Networks run in eval mode (dropout off), so every provider computes the same
function; training steps with dropout are in ``benchmarks/test_bench_models.py``.
A network's error adds up seven layers' roundings and ReLU masks that flip where
a pre-activation rounds across zero: in bfloat16 its gradients differ from
float64 by about a quarter in norm, PyTorch's own network's as much (measured on
alexnet). So network rows pass on each tensor's norm-wise relative error
(``NETWORK_RTOL``): a gross-error check; the per-op rows are the precise ones.

Byte model: the bytes that must cross memory for each kernel of a sequence,
every tensor it reads read once and every tensor it writes written once. Ours
is the kernel sequence in ``_OURS``, PyTorch eager's the one in ``_EAGER``
(taken from the profiler's aten ops for torch 2.14), each kernel at that same
minimum, so eager's figure is a lower bound for eager too. Whole networks have
no byte model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alexnet_kernels import models, ops, reference
from alexnet_kernels.ops._args import pool_output_size

LRN_PARAMS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}  # the paper's
POOL_PARAMS = {"kernel_size": 3, "stride": 2}  # overlapping 3x3/2 pooling
DROPOUT_P = 0.5
_PARAMS: dict[str, dict[str, object]] = {
    "lrn": LRN_PARAMS, "max_pool2d": POOL_PARAMS, "dropout": {"p": DROPOUT_P}}
NETWORKS: dict[str, Callable[..., torch.nn.Module]] = {
    "alexnet": models.alexnet, "alexnet_paper": models.alexnet_paper}
_WEIGHT_SEED = 1234
# Norm-wise relative error allowed for a whole network's output and each gradient
# (see the module docstring). PyTorch's own alexnet, batch 2, measured: 1.5e-6
# (float32), 0.07 (float16), 0.23 (bfloat16) on its worst gradient.
NETWORK_RTOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 0.15,
                torch.bfloat16: 0.5}

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Conv:
    """A convolution layer's hyper-parameters (the input channels are the case's)."""

    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1


@dataclass(frozen=True)
class Program:
    """A callable and the tensors (besides its input) whose gradients its backward gives."""

    fn: Fn
    params: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class Case:
    """One op at one of AlexNet's layer shapes, or a whole network (``op == "model"``,
    ``layer`` naming it); ``shape`` is per sample, without the batch."""

    op: str
    layer: str
    shape: tuple[int, ...]
    conv: Conv | None = None  # conv2d_relu only

    @property
    def name(self) -> str:
        return f"{self.op} {self.layer} {'x'.join(map(str, self.shape))}"

    def reference(self, device: torch.device, dtype: torch.dtype) -> Program:
        """PyTorch's implementation (eager, and what torch.compile compiles)."""
        return self._program("torch", device, dtype)

    def ours(self, backend: str, device: torch.device, dtype: torch.dtype) -> Program:
        return self._program(backend, device, dtype)

    def float64_reference(self, device: torch.device, dtype: torch.dtype) -> Program:
        """PyTorch in float64 with ``dtype``'s rounded weights; for conv2d_relu the
        convolution before the ReLU (see :func:`check_accuracy`)."""
        if self.op == "conv2d_relu":
            return self._conv_program(None, device, dtype, torch.float64)
        return self._program("torch", device, dtype, compute_dtype=torch.float64)

    def _program(self, backend: str, device: torch.device, dtype: torch.dtype,
                 compute_dtype: torch.dtype | None = None) -> Program:
        compute_dtype = compute_dtype or dtype
        if self.op == "model":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_WEIGHT_SEED)
                net = NETWORKS[self.layer](backend=backend)
            net = net.to(dtype=dtype).to(device=device, dtype=compute_dtype).eval()
            return Program(net, tuple(net.parameters()))
        if self.op == "conv2d_relu":
            return self._conv_program(backend, device, dtype, compute_dtype)
        kwargs = _PARAMS[self.op]
        if backend == "torch":
            return Program(functools.partial(getattr(reference, self.op), **kwargs))
        return Program(functools.partial(getattr(ops, self.op), **kwargs, backend=backend))

    def _conv_program(self, backend: str | None, device: torch.device, dtype: torch.dtype,
                      compute_dtype: torch.dtype) -> Program:
        """conv2d+ReLU on ``backend``; backend None: the convolution alone."""
        conv = self.conv
        assert conv is not None, self.name
        in_per_group = self.shape[0] // conv.groups
        generator = torch.Generator().manual_seed(_WEIGHT_SEED)
        fan_in = in_per_group * conv.kernel_size ** 2
        weight = torch.randn(conv.out_channels, in_per_group, conv.kernel_size,
                             conv.kernel_size, generator=generator, dtype=torch.float64)
        bias = torch.randn(conv.out_channels, generator=generator, dtype=torch.float64)
        # He-style scale keeps activations O(1), as in a trained network's layers.
        params = tuple(t.to(dtype).to(device=device, dtype=compute_dtype).requires_grad_()
                       for t in (weight * math.sqrt(2.0 / fan_in), bias * 0.1))
        kwargs = {"weight": params[0], "bias": params[1], "stride": conv.stride,
                  "padding": conv.padding, "groups": conv.groups}
        if backend is None:
            fn = functools.partial(F.conv2d, **kwargs)
        elif backend == "torch":
            fn = functools.partial(reference.conv2d_relu, **kwargs)
        else:
            fn = functools.partial(ops.conv2d_relu, **kwargs, backend=backend)
        return Program(fn, params)


CASES = (
    # torchvision's five convolutions.
    Case("conv2d_relu", "conv1", (3, 224, 224), Conv(64, 11, 4, 2)),
    Case("conv2d_relu", "conv2", (64, 27, 27), Conv(192, 5, padding=2)),
    Case("conv2d_relu", "conv3", (192, 13, 13), Conv(384, 3, padding=1)),
    Case("conv2d_relu", "conv4", (384, 13, 13), Conv(256, 3, padding=1)),
    Case("conv2d_relu", "conv5", (256, 13, 13), Conv(256, 3, padding=1)),
    # The paper's conv2 with its two-GPU grouping.
    Case("conv2d_relu", "paper-conv2-grouped", (96, 27, 27), Conv(256, 5, padding=2, groups=2)),
    Case("lrn", "conv1", (96, 55, 55)),
    Case("lrn", "conv2", (256, 27, 27)),
    Case("max_pool2d", "pool1", (96, 55, 55)),
    Case("max_pool2d", "pool2", (256, 27, 27)),
    Case("max_pool2d", "pool5", (256, 13, 13)),
    Case("dropout", "conv1", (96, 55, 55)),
    Case("dropout", "fc6-input", (9216,)),
    Case("dropout", "fc7-input", (4096,)),
    Case("model", "alexnet", (3, 224, 224)),
    Case("model", "alexnet_paper", (3, 227, 227)),
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
    grad_max_abs: float  # over the input-gradient and every weight gradient
    grad_max_rel: float
    keep_fraction: float | None  # dropout only
    passed: bool


def _errors(case: Case, actual: torch.Tensor, expected64: torch.Tensor
            ) -> tuple[float, float, bool]:
    """Max abs error, max relative error (relative to max(|expected|, atol), so that
    near-zero references do not blow it up) and whether ``actual`` passes (see the
    module docstring)."""
    rtol, atol = reference.TOLERANCES[actual.dtype]
    diff = (actual.double() - expected64).abs()
    if diff.numel() == 0:
        return 0.0, 0.0, True
    scale = expected64.abs()
    if case.op == "model":
        passed = bool(diff.norm() <= NETWORK_RTOL[actual.dtype] * expected64.norm())
    else:
        if case.op == "conv2d_relu":
            atol = rtol * max(scale.max().item(), 1.0)
        passed = bool((diff <= atol + rtol * scale).all())  # NaN fails
    return diff.max().item(), (diff / scale.clamp_min(atol)).max().item(), passed


def _keep_fraction_plausible(kept: float, n: int, p: float) -> bool:
    """Within 6 standard deviations of a Binomial(n, 1 - p) fraction."""
    return abs(kept - (1.0 - p)) <= 6.0 * math.sqrt(p * (1.0 - p) / max(n, 1)) + 1.0 / max(n, 1)


def _run(program: Program, x: torch.Tensor, g: torch.Tensor | None
         ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Output, the gradients of (input, *params) for output gradient g, and g (normal
    samples of a fixed seed if None)."""
    xg = x.detach().clone().requires_grad_()
    y = program.fn(xg)
    if g is None:
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64).to(device=y.device, dtype=y.dtype)
    grads = torch.autograd.grad(y, (xg, *program.params), g)
    return y.detach(), list(grads), g


def _expected(case: Case, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor,
              float64: Program) -> tuple[torch.Tensor, list[torch.Tensor], float | None]:
    """The float64 reference output and gradients for ours having produced y."""
    if case.op == "dropout":
        # Ours draws its own mask: the reference applies that mask.
        mask = (y.detach() != 0).double()
        scale = 1.0 / (1.0 - DROPOUT_P)
        return x.double() * mask * scale, [g.double() * mask * scale], mask.mean().item()
    if case.op == "conv2d_relu":
        # The backward's ReLU mask is ours (y > 0): a pre-activation that rounds
        # across zero in x's dtype would otherwise flip whole gradient terms.
        pre64, grads64, _ = _run(float64, x.double(), g.double() * (y > 0))
        return pre64.clamp_min(0), grads64, None
    y64, grads64, _ = _run(float64, x.double(), g.double())
    return y64, grads64, None


def check_accuracy(case: Case, ours: Program, provider: str, x: torch.Tensor,
                   float64: Program | None = None) -> Accuracy:
    """Runs ours forward and backward on x and compares with the float64 reference
    (by default the case's own, with x's dtype's rounded weights).

    fp32 is checked at fp32's tolerance, so TF32 is off while checking; the timings
    keep PyTorch's default, which lets convolutions (cuDNN's and ours) use TF32 on GPUs.
    """
    float64 = float64 or case.float64_reference(x.device, x.dtype)
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        y, grads, g = _run(ours, x, None)
    y64, grads64, kept = _expected(case, x, y, g, float64)
    out_abs, out_rel, out_ok = _errors(case, y, y64)
    grad_errors = [_errors(case, a, e)
                   for a, e in zip(grads, grads64, strict=True)]
    grad_abs = max((e[0] for e in grad_errors), default=0.0)
    grad_rel = max((e[1] for e in grad_errors), default=0.0)
    passed = out_ok and all(e[2] for e in grad_errors) and (
        kept is None or _keep_fraction_plausible(kept, y.numel(), DROPOUT_P))
    return Accuracy(case.name, provider, str(x.dtype).removeprefix("torch."), out_abs, out_rel,
                    grad_abs, grad_rel, kept, passed)


# --- byte model ---------------------------------------------------------------------------

# A kernel: (name, tensors read, tensors written), each tensor a letter whose
# size in bytes _tensor_bytes gives for a case:
#   X the op's input (and grad_x), Y its output (and grad_y), P LRN's input
#   padded by size - 1 channels, I int64 indices per pooled output, A our
#   uint8 argmax per pooled output, M a bool mask per element.
#   W, B a convolution's weight and bias, G its masked output gradient.
Kernel = tuple[str, str, str]
_DEVICES = ("cpu", "cuda")

# Backward of conv2d+ReLU as PyTorch runs it: mask grad_y with y > 0 (G), then
# one convolution_backward for the three gradients.
_CONV_RELU_BACKWARD = [("threshold_backward", "YY", "G"), ("convolution_backward", "GXW", "XWB")]

_OURS: dict[tuple[str, str], tuple[list[Kernel], list[Kernel]]] = {
    # CPU: oneDNN's convolution with the ReLU as its post-op; the backward is
    # PyTorch's sequence (a hand-written one measured slower, see the README).
    ("conv2d_relu", "cpu"): ([("conv2d_relu", "XWB", "Y")], _CONV_RELU_BACKWARD),
    # CUDA: grad_x, grad_w and grad_b kernels each read grad_y and y (the mask).
    ("conv2d_relu", "cuda"): ([("conv2d_relu", "XWB", "Y")],
                              [("grad_x", "YYW", "X"), ("grad_w", "YYX", "W"),
                               ("grad_b", "YY", "B")]),
    # The backward reads grad_y, x and y (saved by the forward, already in memory).
    **{("lrn", d): ([("lrn", "X", "Y")], [("lrn_backward", "YXY", "X")]) for d in _DEVICES},
    # The forward is timed without autograd: on the CPU that runs the values-only
    # op (no argmax); CUDA writes the argmax regardless.
    ("max_pool2d", "cpu"): ([("max_pool2d_values", "X", "Y")],
                            [("max_pool2d_backward", "YA", "X")]),
    ("max_pool2d", "cuda"): ([("max_pool2d", "X", "YA")], [("max_pool2d_backward", "YA", "X")]),
    # The mask is regenerated from (seed, offset) in the backward, never stored.
    **{("dropout", d): ([("dropout", "X", "Y")], [("dropout (grad_y, same mask)", "Y", "X")])
       for d in _DEVICES},
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
    **{("conv2d_relu", d): ([("convolution", "XWB", "Y"), ("relu", "Y", "Y")],
                            _CONV_RELU_BACKWARD) for d in _DEVICES},
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
    elif case.op == "conv2d_relu":
        conv = case.conv
        assert conv is not None, case.name
        outputs = batch * conv.out_channels * math.prod(
            (n + 2 * conv.padding - conv.kernel_size) // conv.stride + 1 for n in case.shape[1:])
        weights = conv.out_channels * case.shape[0] // conv.groups * conv.kernel_size ** 2
        sizes.update(Y=outputs * itemsize, G=outputs * itemsize, W=weights * itemsize,
                     B=conv.out_channels * itemsize)
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


def traffic(case: Case, batch: int, itemsize: int, device_type: str) -> Traffic | None:
    """The byte model of ``case`` for a batch of ``itemsize``-byte elements (None for a
    whole network)."""
    if case.op == "model":
        return None
    sizes = _tensor_bytes(case, batch, itemsize)
    ours, eager = _OURS[(case.op, device_type)], _EAGER[(case.op, device_type)]
    directions = ("forward", "backward")
    return Traffic(
        ours={d: _bytes(k, sizes) for d, k in zip(directions, ours, strict=True)},
        eager={d: _bytes(k, sizes) for d, k in zip(directions, eager, strict=True)},
        eager_kernels={d: [name for name, _, _ in k]
                       for d, k in zip(directions, eager, strict=True)},
    )
