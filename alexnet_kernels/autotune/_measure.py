"""Timing the candidates of one call on fresh tensors, and the rule that picks the winner.

A call is described by its key (``alexnet_kernels.autotune.call_key``): per
tensor argument its shape, dtype, memory format and whether a gradient is
wanted, plus the op's other arguments. The candidates are timed on tensors
made fresh from that description, never on the caller's (which may be fake
tensors while ``torch.compile`` traces), forward and backward when a gradient
is wanted, forward alone otherwise.

Procedure: every candidate is called twice to warm up (the first call may
compile, allocate or run a library's own algorithm search); a candidate that
raises is dropped with its error; one whose faster warm-up call is more than
``PRUNE_FACTOR`` times the fastest candidate's has plainly lost and is not
timed further (its warm-up time stands as its one sample).
Then rounds of one sample per remaining candidate, in rotating order, at least
``MIN_ROUNDS`` and at most ``MAX_ROUNDS``, stopping once the rounds have taken
``BUDGET_MS``. A sample is the mean of enough back-to-back calls to last
``MIN_SAMPLE_MS`` (one call on a CPU at AlexNet's sizes; tens for microsecond
GPU kernels, whose single-call times are dominated by launch and sync).

Decision (:func:`decide`): the fastest median wins unless a simpler candidate
is within the noise of it: within ``max(MIN_MARGIN, relative IQR of either
candidate's samples)``. Ties go to the simplest, in the order of
``SIMPLICITY``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from alexnet_kernels._timing import iqr, median, rotated, time_ms

# Simplest first: PyTorch's own path (eager's numerics, maintained and tested
# upstream, nothing of ours in the way), then the ahead-of-time compiled kernels
# (no JIT, no extra dependency), then Triton (compiled at first use, its own
# autotuner, a separate compiler).
SIMPLICITY = ("torch", "native", "triton")
MIN_MARGIN = 0.03
MIN_ROUNDS = 3
MAX_ROUNDS = 25
BUDGET_MS = 500.0
MIN_SAMPLE_MS = 1.0
MAX_CALLS_PER_SAMPLE = 100
PRUNE_FACTOR = 4.0
WARMUP_CALLS = 2

# (shape, dtype, memory format, wants a gradient); None for an absent optional tensor.
TensorSpec = tuple[tuple[int, ...], torch.dtype, torch.memory_format, bool] | None
# runner(backend, tensors, args, generator) calls the op's front end with backend=.
Runner = Callable[[str, list, tuple, torch.Generator], object]


@dataclass
class Measurement:
    """Milliseconds per call of each candidate that ran, and why the others did not."""

    samples_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    calls_per_sample: int = 1


def fresh_tensors(specs: Sequence[TensorSpec], device: torch.device,
                  generator: torch.Generator) -> list[torch.Tensor | None]:
    """Normal samples laid out as ``specs`` describe, on ``device``."""
    tensors: list[torch.Tensor | None] = []
    for spec in specs:
        if spec is None:
            tensors.append(None)
            continue
        shape, dtype, memory_format, wants_grad = spec
        t = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
        tensors.append(t.normal_(generator=generator).requires_grad_(wants_grad))
    return tensors


def candidate_call(runner: Runner, backend: str, tensors: list, args: tuple,
                   generator: torch.Generator, needs_grad: bool) -> Callable[[], None]:
    """One call of ``backend``: forward, and backward into every tensor that wants a
    gradient when ``needs_grad`` (the output gradient is drawn once, at the first call)."""
    if not needs_grad:
        def forward() -> None:
            with torch.no_grad():
                runner(backend, tensors, args, generator)
        return forward
    leaves = [t for t in tensors if t is not None and t.requires_grad]
    grad_y: list[torch.Tensor] = []

    def forward_backward() -> None:
        with torch.enable_grad():
            y = runner(backend, tensors, args, generator)
            y = y[0] if isinstance(y, tuple) else y
            if not grad_y:
                grad_y.append(torch.empty_like(y).normal_(generator=generator))
            torch.autograd.grad(y, leaves, grad_y[0])
    return forward_backward


@contextlib.contextmanager
def _real_tensors(device: torch.device) -> Iterator[None]:
    """Real kernels on real tensors, even while torch.compile traces with fake ones or
    autocast is on (the key already holds the dtype the call runs in)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.autocast(device.type, enabled=False):
        yield


def _warm_up(calls: dict[str, Callable[[], None]], device: torch.device,
             result: Measurement) -> dict[str, float]:
    """Runs each call WARMUP_CALLS times; returns the fastest call's ms of each that ran
    (a loaded machine only ever adds time, so the minimum is the least disturbed)."""
    fastest: dict[str, float] = {}
    for name, call in calls.items():
        try:
            fastest[name] = min(time_ms(call, device) for _ in range(WARMUP_CALLS))
        except Exception as error:
            result.errors[name] = f"{type(error).__name__}: {error}".splitlines()[0]
    return fastest


def measure(runner: Runner, candidates: Sequence[str], specs: Sequence[TensorSpec],
            args: tuple, device: torch.device, needs_grad: bool) -> Measurement:
    """Times ``candidates`` on fresh tensors described by ``specs`` (see the module
    docstring); the caller's random streams are untouched (a private generator draws
    the tensors and any dropout seed)."""
    result = Measurement()
    with _real_tensors(device):
        generator = torch.Generator(device=device).manual_seed(0)
        tensors = fresh_tensors(specs, device, generator)
        calls = {c: candidate_call(runner, c, tensors, args, generator, needs_grad)
                 for c in candidates}
        warm = _warm_up(calls, device, result)
        if not warm:
            return result
        best = min(warm.values())
        result.pruned = [c for c, ms in warm.items() if ms > PRUNE_FACTOR * best]
        for name in result.pruned:
            result.samples_ms[name] = [warm[name]]
        timed = [c for c in warm if c not in result.pruned]
        calls_per_sample = math.ceil(MIN_SAMPLE_MS / max(best, 1e-6))
        result.calls_per_sample = min(max(calls_per_sample, 1), MAX_CALLS_PER_SAMPLE)
        for name in timed:
            result.samples_ms[name] = []
        _rounds(calls, timed, device, result)
    return result


def _rounds(calls: dict[str, Callable[[], None]], timed: list[str], device: torch.device,
            result: Measurement) -> None:
    start = time.perf_counter()
    for round_index in range(MAX_ROUNDS):
        for name in rotated(timed, round_index):
            result.samples_ms[name].append(time_ms(calls[name], device, result.calls_per_sample))
        spent_ms = (time.perf_counter() - start) * 1e3
        if round_index + 1 >= MIN_ROUNDS and spent_ms >= BUDGET_MS:
            return


def relative_noise(samples: Sequence[float]) -> float:
    """IQR / median of one candidate's samples (0 for a single sample)."""
    middle = median(samples)
    return iqr(samples) / middle if middle > 0 else 0.0


def decide(samples_ms: dict[str, list[float]], order: Sequence[str] = SIMPLICITY
           ) -> tuple[str, str]:
    """(winner, reason): the fastest median, unless a simpler candidate is within the
    noise of it (see the module docstring)."""
    medians = {c: median(s) for c, s in samples_ms.items()}
    fastest = min(medians, key=medians.__getitem__)
    noise = {c: relative_noise(s) for c, s in samples_ms.items()}

    def tied(c: str) -> bool:
        margin = max(MIN_MARGIN, noise[fastest], noise[c])
        return medians[c] <= medians[fastest] * (1.0 + margin)

    winner = min((c for c in medians if tied(c)), key=order.index)
    if winner == fastest:
        return winner, "fastest"
    slower = medians[winner] / medians[fastest] - 1.0
    return winner, (f"within noise of {fastest} ({slower:+.1%}, margin "
                    f"{max(MIN_MARGIN, noise[fastest], noise[winner]):.1%}): the simpler one")
