"""The main job: verify the kernels against PyTorch, then time them side by side.

    python -m alexnet_kernels.bench [--batch 32] [--repeats 7] [--quick]

For each op and AlexNet shape: (1) the largest absolute and relative error of
our output and gradient against PyTorch's reference computed in float64, with
pass/fail per row; (2) median forward and forward+backward times of PyTorch
eager, ``torch.compile`` of the same PyTorch code, and ours, interleaved in one
process so that machine noise hits all providers alike; ratios are eager/ours
and compile/ours.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

import alexnet_kernels as ak
from alexnet_kernels import reference

# (name, channels, height, width, (size, alpha, beta, k)): the LRN layers of the
# paper's network (after conv1 and conv2).
LRN_CASES = [
    ("paper conv1", 96, 55, 55, (5, 1e-4, 0.75, 2.0)),
    ("paper conv2", 256, 27, 27, (5, 1e-4, 0.75, 2.0)),
]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


@dataclass
class Accuracy:
    name: str
    max_abs: float
    max_rel: float
    passed: bool


@dataclass
class Timing:
    name: str
    provider: str
    forward_ms: float
    forward_backward_ms: float


def _errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    diff = (actual.double() - expected).abs()
    scale = expected.abs().clamp_min(1e-6)
    return diff.max().item(), (diff / scale).max().item()


def verify_lrn(batch: int, dtype: torch.dtype) -> list[Accuracy]:
    rows = []
    for name, c, h, w, params in LRN_CASES:
        x = torch.randn(batch, c, h, w, dtype=dtype)
        g = torch.randn_like(x)
        xo = x.clone().requires_grad_()
        y = ak.lrn(xo, *params)
        y.backward(g)
        x64 = x.double().requires_grad_()
        y64 = reference.lrn(x64, *params)
        y64.backward(g.double())
        for what, ours, ref in (("forward", y.detach(), y64.detach()),
                                ("backward", xo.grad, x64.grad)):
            max_abs, max_rel = _errors(ours, ref)
            tol = TOLERANCE[dtype]
            passed = torch.allclose(ours.double(), ref, rtol=tol, atol=tol)
            rows.append(Accuracy(f"lrn {what} {name}", max_abs, max_rel, passed))
    return rows


def _median_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def time_lrn(batch: int, repeats: int) -> list[Timing]:
    rows = []
    for name, c, h, w, params in LRN_CASES:
        x = torch.randn(batch, c, h, w)
        g = torch.randn_like(x)
        xg = x.clone().requires_grad_()
        providers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "pytorch eager": lambda t, p=params: reference.lrn(t, *p),
            "torch.compile": torch.compile(lambda t, p=params: reference.lrn(t, *p)),
            "alexnet_kernels": lambda t, p=params: ak.lrn(t, *p),
        }

        def forward(fn, _x=x):
            with torch.no_grad():
                fn(_x)

        def forward_backward(fn, _x=xg, _g=g):
            fn(_x).backward(_g)
            _x.grad = None

        samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in providers}
        for fn in providers.values():  # warm-up, including compilation
            forward(fn)
            forward_backward(fn)
        for _ in range(repeats):  # interleaved so noise hits every provider alike
            for key, fn in providers.items():
                samples[key][0].extend(_median_ms(lambda f=fn: forward(f), 1))
                samples[key][1].extend(_median_ms(lambda f=fn: forward_backward(f), 1))
        for key, (fwd, fwd_bwd) in samples.items():
            rows.append(Timing(f"lrn {name} {tuple(x.shape)}", key, statistics.median(fwd),
                               statistics.median(fwd_bwd)))
    return rows


def render(accuracy: list[Accuracy], timings: list[Timing], console: Console) -> None:
    table = Table(title="Accuracy against PyTorch (float64 reference)")
    for column in ("check", "max abs error", "max rel error", "result"):
        table.add_column(column)
    for row in accuracy:
        table.add_row(row.name, f"{row.max_abs:.2e}", f"{row.max_rel:.2e}",
                      "[green]pass[/]" if row.passed else "[red]FAIL[/]")
    console.print(table)

    table = Table(title=f"CPU time, median ({torch.get_num_threads()} threads)")
    for column in ("case", "provider", "forward ms", "fwd+bwd ms", "fwd+bwd speed-up"):
        table.add_column(column)
    ours = {r.name: r for r in timings if r.provider == "alexnet_kernels"}
    for row in timings:
        speedup = row.forward_backward_ms / ours[row.name].forward_backward_ms
        table.add_row(row.name, row.provider, f"{row.forward_ms:.1f}",
                      f"{row.forward_backward_ms:.1f}",
                      "1.00x (ours)" if row.provider == "alexnet_kernels" else
                      f"ours {speedup:.2f}x faster")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify and benchmark alexnet_kernels.")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 repeats")
    args = parser.parse_args(argv)
    batch, repeats = (8, 3) if args.quick else (args.batch, args.repeats)
    console = Console()
    console.print(f"alexnet_kernels build: {ak.build_info()}")
    torch.manual_seed(0)
    accuracy = verify_lrn(min(batch, 4), torch.float32) + verify_lrn(2, torch.float64)
    timings = time_lrn(batch, repeats)
    render(accuracy, timings, console)
    return 0 if all(row.passed for row in accuracy) else 1


if __name__ == "__main__":
    raise SystemExit(main())
