"""Shared settings of the benchmark suite (`pytest benchmarks/ --benchmark-only`).

Environment: AK_BENCH_BATCH (default 32), AK_BENCH_ROUNDS (default 5).
"""

from __future__ import annotations

import os
import platform

import torch

BATCH = int(os.environ.get("AK_BENCH_BATCH", "32"))
ROUNDS = int(os.environ.get("AK_BENCH_ROUNDS", "5"))


def machine_info() -> dict[str, object]:
    """Recorded with every result, so numbers are never read without their context."""
    return {
        "device": "cpu",
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
    }


def run(benchmark, fn, group: str, **info) -> None:
    """Time fn with warm-up rounds (which include torch.compile's compilation)."""
    benchmark.group = group
    benchmark.extra_info.update(machine_info(), **info)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=2)
