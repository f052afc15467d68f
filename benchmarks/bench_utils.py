"""Shared settings and timing of the benchmark suite (`pytest benchmarks/ --benchmark-only`).

The cases, providers and inputs are the main job's (``alexnet_kernels.bench.cases``
and ``alexnet_kernels.bench.job``): the baselines are built from the same reference
code as the tests, and every provider of a case gets the same input and weights.

Environment:

- AK_BENCH_DEVICE: ``cpu`` or ``cuda`` (default: cuda when available);
- AK_BENCH_BATCH (default 32), AK_BENCH_DTYPE (``fp32`` or ``bf16``, default fp32),
  AK_BENCH_LAYOUT (``contiguous`` or ``channels_last``);
- AK_BENCH_ROUNDS (default 15), AK_BENCH_WARMUP (default 5 warm-up rounds:
  besides torch.compile's compilation, the first large allocations of a process
  can cost several times the steady state on virtual machines, whose memory is
  backed by the host on first touch).

Providers: eager, compile, ours (``backend="auto"``: what the autotuner picks
here; each result's ``extra_info["ours_ran"]`` names it) and each hand-written
kernel on its own (native; triton too on CUDA). A provider that cannot run a
case (PyTorch has no bfloat16 LRN on the CPU, for one) is skipped with the
reason. The autotuner's decisions go to a folder of the session (conftest.py),
so every run decides afresh and the user's cache is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

from alexnet_kernels import autotune, env_report
from alexnet_kernels._timing import synchronize
from alexnet_kernels.bench import job
from alexnet_kernels.bench.cases import CASES, Case, make_input
from alexnet_kernels.bench.timing import forward_backward_call, forward_call

LAYOUTS = ("contiguous", "channels_last")


def _setting(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


DEVICE = torch.device(os.environ.get("AK_BENCH_DEVICE")
                      or ("cuda" if torch.cuda.is_available() else "cpu"))
BATCH = int(os.environ.get("AK_BENCH_BATCH", "32"))
DTYPE_NAME = _setting("AK_BENCH_DTYPE", "fp32", tuple(job.DTYPES))
DTYPE = job.DTYPES[DTYPE_NAME]
LAYOUT = _setting("AK_BENCH_LAYOUT", "contiguous", LAYOUTS)
CHANNELS_LAST = LAYOUT == "channels_last"
ROUNDS = int(os.environ.get("AK_BENCH_ROUNDS", "15"))
WARMUP = int(os.environ.get("AK_BENCH_WARMUP", "5"))
PROVIDERS = job.provider_names(DEVICE)


def cases(op: str) -> list[Case]:
    """The main job's cases of ``op``, as pytest parameters named by layer."""
    return [pytest.param(case, id=case.layer) for case in CASES if case.op == op]


def machine_info() -> dict[str, object]:
    """Recorded with every result, so numbers are never read without their context."""
    report = env_report.collect()
    gpu = report["gpu"] if DEVICE.type == "cuda" else None
    return {
        "device": DEVICE.type,
        "device_name": gpu["name"] if gpu else report["processor"],
        "threads": report["torch_threads"],
        "conv_allow_tf32": report["conv_allow_tf32"],
        "torch": report["torch"],
        "triton": report["triton"],
        "cuda": report["cuda_runtime"],
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "cpu_capability": report["cpu_capability"],
        "dtype": DTYPE_NAME,
        "layout": LAYOUT,
        "batch": BATCH,
    }


def _or_skip(fn: Callable[..., object], *args: object) -> object:
    """fn(*args), or a skip of the benchmark saying why it cannot run here."""
    try:
        return fn(*args)
    except (NotImplementedError, RuntimeError) as error:
        pytest.skip(f"cannot run here: {type(error).__name__}: {error}".splitlines()[0])


def run(benchmark, fn: Callable[[], object], group: str, rounds: int | None = None,
        **info) -> None:
    """Time fn (which must end with the device synchronized) after warm-up rounds
    (which include torch.compile's compilation and the autotuner's first-call
    timing); ``rounds`` lowers the number of rounds for slow cases (at most ROUNDS)."""
    with autotune.recording() as choices:
        _or_skip(fn)
    benchmark.group = group
    benchmark.extra_info.update(machine_info(), **info)
    if choices:
        benchmark.extra_info["ours_ran"] = autotune.describe_choices(choices)
    rounds = ROUNDS if rounds is None else min(rounds, ROUNDS)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=min(WARMUP, rounds))


def synchronized(call: Callable[[], object]) -> Callable[[], object]:
    """call, then wait for the device: what a benchmark must time on a GPU."""
    def timed() -> None:
        call()
        synchronize(DEVICE)
    return timed


def _input(case: Case) -> torch.Tensor:
    return make_input(case, BATCH, DTYPE, CHANNELS_LAST, DEVICE)


def time_forward(benchmark, case: Case, provider: str, rounds: int | None = None) -> None:
    """Times ``provider`` on a batch of ``case`` without autograd."""
    program = job.make_program(case, provider, DEVICE, DTYPE)
    run(benchmark, synchronized(forward_call(program, _input(case))),
        f"{case.op}-forward-{case.layer}", rounds, provider=provider)


def time_forward_backward(benchmark, case: Case, provider: str,
                          rounds: int | None = None) -> None:
    """Times ``provider``'s forward and backward (gradients of the input and any weights)."""
    program = job.make_program(case, provider, DEVICE, DTYPE)
    x = _input(case)
    with torch.no_grad():
        grad = torch.randn_like(_or_skip(program.fn, x))
    run(benchmark, synchronized(forward_backward_call(program, x, grad)),
        f"{case.op}-forward-backward-{case.layer}", rounds, provider=provider)


def op_benchmarks(op: str, rounds: int | None = None) -> tuple[Callable, Callable]:
    """The forward and forward+backward benchmarks of ``op`` over its cases and every
    provider; a module binds them to ``test_*`` names for pytest to collect."""
    parametrize = (pytest.mark.parametrize("provider", PROVIDERS),
                   pytest.mark.parametrize("case", cases(op)))

    def forward(benchmark, case: Case, provider: str) -> None:
        time_forward(benchmark, case, provider, rounds)

    def forward_backward(benchmark, case: Case, provider: str) -> None:
        time_forward_backward(benchmark, case, provider, rounds)

    for mark in parametrize:
        forward, forward_backward = mark(forward), mark(forward_backward)
    return forward, forward_backward
