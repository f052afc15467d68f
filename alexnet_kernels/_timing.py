"""Wall-clock timing helpers shared by the main job, the benchmarks and the autotuner.

A time is taken with the device synchronized before the clock starts and
before it stops (CUDA kernels run asynchronously); statistics are the median
and the interquartile range, which a few outliers of a loaded machine do not
move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def iqr(samples: Sequence[float]) -> float:
    """Interquartile range (0 for fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q3 - q1


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Milliseconds per call of ``calls`` back-to-back calls of fn on ``device``."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3 / calls


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` starting at position ``round_index`` (mod its length), so that in
    round-robin timing no item always runs first."""
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]
