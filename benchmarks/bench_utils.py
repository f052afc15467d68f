"""Shared settings of the benchmark suite (`pytest benchmarks/ --benchmark-only`).

Environment: AK_BENCH_BATCH (default 32), AK_BENCH_ROUNDS (default 15),
AK_BENCH_WARMUP (default 5 warm-up rounds: besides torch.compile's compilation,
the first large allocations of a process can cost several times the steady
state on virtual machines, whose memory is backed by the host on first touch).
"""

from __future__ import annotations

import os
import platform

import torch

BATCH = int(os.environ.get("AK_BENCH_BATCH", "32"))
ROUNDS = int(os.environ.get("AK_BENCH_ROUNDS", "15"))
WARMUP = int(os.environ.get("AK_BENCH_WARMUP", "5"))


def _cpu_capability() -> str:
    from alexnet_kernels import _extension

    return _extension.cpu_capability() if _extension.is_loaded() else "none"


def machine_info() -> dict[str, object]:
    """Recorded with every result, so numbers are never read without their context."""
    return {
        "device": "cpu",
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "cpu_capability": _cpu_capability(),
    }


def run(benchmark, fn, group: str, rounds: int | None = None, **info) -> None:
    """Time fn with warm-up rounds (which include torch.compile's compilation).

    ``rounds`` lowers the number of rounds for slow cases (at most ROUNDS).
    """
    benchmark.group = group
    benchmark.extra_info.update(machine_info(), **info)
    rounds = ROUNDS if rounds is None else min(rounds, ROUNDS)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=min(WARMUP, rounds))


def time_forward(benchmark, fn, input_shape: tuple[int, ...], group: str, **info) -> None:
    """Times fn(x) without autograd on a fresh batch of shape (BATCH, *input_shape)."""
    x = torch.randn(BATCH, *input_shape)

    def forward() -> None:
        with torch.no_grad():
            fn(x)

    run(benchmark, forward, group, dtype="float32", batch=BATCH, **info)


def time_forward_backward(benchmark, fn, input_shape: tuple[int, ...], group: str,
                          **info) -> None:
    """Times fn(x).backward(grad) on a fresh batch of shape (BATCH, *input_shape)."""
    x = torch.randn(BATCH, *input_shape, requires_grad=True)
    with torch.no_grad():
        grad = torch.randn(fn(x).shape)

    def forward_backward() -> None:
        fn(x).backward(grad)
        x.grad = None

    run(benchmark, forward_backward, group, dtype="float32", batch=BATCH, **info)
