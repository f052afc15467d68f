"""Interleaved timing for the main job: every provider of a case in one process, round-robin.

Each round times every provider once, forward (under ``no_grad``) and
forward+backward, starting each round with the next provider so that no
provider always runs first. Warm-up rounds are not recorded: they include
torch.compile's compilation and the first large allocations of a process,
which cost several times the steady state on virtual machines. On CUDA the
device is synchronized before the clock starts and before it stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from alexnet_kernels._timing import median, rotated, time_ms
from alexnet_kernels.bench.cases import Program


@dataclass
class Samples:
    """Milliseconds per call of one provider on one case."""

    case: str
    provider: str
    forward_ms: list[float] = field(default_factory=list)
    forward_backward_ms: list[float] = field(default_factory=list)


def forward_call(program: Program, x: torch.Tensor) -> Callable[[], object]:
    """program(x) without autograd, as a call with no arguments."""
    def run() -> None:
        with torch.no_grad():
            program.fn(x)
    return run


def forward_backward_call(program: Program, x: torch.Tensor, grad: torch.Tensor
                          ) -> Callable[[], object]:
    """program(x) and the gradients of x and program.params for output gradient grad."""
    xg = x.detach().clone().requires_grad_()

    def run() -> None:
        # autograd.grad: no .grad accumulation kernels in the timed region.
        torch.autograd.grad(program.fn(xg), (xg, *program.params), grad)
    return run


def _drop_unsupported(runs: dict[str, tuple[Callable[[], object], Callable[[], object]]]
                      ) -> dict[str, str]:
    """Calls each provider once; removes those that raise (PyTorch's eager LRN has no
    bfloat16 CPU kernel, for one) and returns why, so that the others are still timed."""
    errors = {}
    for name, (forward, forward_backward) in list(runs.items()):
        try:
            forward()
            forward_backward()
        except Exception as error:
            errors[name] = f"{type(error).__name__}: {error}".splitlines()[0]
            del runs[name]
    return errors


def time_case(case: str, providers: dict[str, Program], x: torch.Tensor, grad: torch.Tensor,
              warmup: int, repeats: int, on_round: Callable[[], None]
              ) -> tuple[list[Samples], dict[str, str]]:
    """Round-robin timing of ``providers`` on input x (grad: the gradient of the output);
    the backward computes the gradients of x and of each provider's params.

    Returns the samples of the providers that ran, and why the others did not.
    """
    runs = {name: (forward_call(program, x), forward_backward_call(program, x, grad))
            for name, program in providers.items()}
    errors = _drop_unsupported(runs)
    samples = {name: Samples(case, name) for name in runs}
    names = list(runs)
    for round_index in range(warmup + repeats):
        for name in rotated(names, round_index):
            forward, forward_backward = runs[name]
            fwd, fwd_bwd = time_ms(forward, x.device), time_ms(forward_backward, x.device)
            if round_index >= warmup:
                samples[name].forward_ms.append(fwd)
                samples[name].forward_backward_ms.append(fwd_bwd)
        on_round()
    return list(samples.values()), errors


def copy_bandwidth_gbs(device: torch.device, nbytes: int = 1 << 28, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second, in GB/s):
    the practical ceiling the kernels' achieved bandwidth is compared with."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = median([time_ms(lambda: dst.copy_(src), device) for _ in range(repeats)])
    return 2 * nbytes / (ms * 1e-3) / 1e9
