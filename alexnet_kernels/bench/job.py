"""The main job: verify the kernels against PyTorch, then time them side by side.

    python -m alexnet_kernels.bench [--quick] [--batch N] [--repeats N] [--warmup N]
                                    [--dtype fp32|bf16] [--channels-last] [--out DIR]

On the device present (CUDA when available, else the CPU), for conv2d+ReLU, LRN,
max-pool and dropout at AlexNet's shapes and for the alexnet and alexnet_paper
networks end to end (``alexnet_kernels.bench.cases``):

1. accuracy: max abs / max rel error of our output and gradients (input and
   weights) against PyTorch's float64 reference, pass/fail per row with
   per-dtype tolerances (fp32 with TF32 off);
2. timing: median and IQR of forward and forward+backward for PyTorch eager,
   ``torch.compile`` of the same PyTorch code, ours (``backend="auto"``: the
   implementation the autotuner picks on this machine, named per row in the
   "ours ran" column) and each hand-written kernel on its own (``native``;
   ``triton`` too on CUDA), interleaved round-robin in this process after
   warm-up rounds (the autotuner's first-call timing falls in the warm-up);
3. the speed-ups (eager/ours, compile/ours, and the same for each kernel) next
   to the analytic bytes our native kernels and eager's kernel sequence must
   move per op (on a GPU, also each hand-written kernel's achieved bandwidth as
   a fraction of a device-to-device copy).

Networks take far longer per call than single ops, so they run a third of the
rounds. ``--only`` selects cases by name (``--only conv2d_relu "model alexnet "``).

Prints the tables and writes results.json (every sample, machine and build
info), results.md and speedup.png into ``--out``. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from alexnet_kernels import _extension, autotune, env_report
from alexnet_kernels.bench import report
from alexnet_kernels.bench.cases import (
    CASES,
    Accuracy,
    Case,
    Program,
    check_accuracy,
    make_input,
    traffic,
)
from alexnet_kernels.bench.timing import (
    Samples,
    copy_bandwidth_gbs,
    forward_backward_call,
    forward_call,
    time_case,
)
from alexnet_kernels.triton import triton_installed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Accuracy runs a float64 reference: a few samples suffice, a full batch is slow.
ACCURACY_BATCH = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alexnet_kernels.bench",
                                     description="Verify and benchmark alexnet_kernels.")
    parser.add_argument("--quick", action="store_true",
                        help="batch 8, 5 repeats, 2 warm-up rounds (unless given)")
    parser.add_argument("--batch", type=int, help="batch size (default 32)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 15)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default 3)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels_last inputs for the 4-D cases")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="run only the cases whose name contains one of these")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    defaults = (8, 5, 2) if args.quick else (32, 15, 3)
    for name, default in zip(("batch", "repeats", "warmup"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def our_backends(device: torch.device) -> dict[str, str]:
    """Provider name -> backend of ours on ``device``: "ours" is ``backend="auto"``,
    the others each hand-written kernel on its own."""
    ours = {"ours": "auto", "native": "native"}
    if device.type == "cuda" and triton_installed():
        ours["triton"] = "triton"
    return ours


def ran_by_ours(program: Program, x: torch.Tensor, grad: torch.Tensor) -> dict[str, str]:
    """What ``backend="auto"`` runs for program(x), per direction ("fwd", "fwd+bwd");
    the first call of a new shape is when the autotuner measures."""
    ran = {}
    for direction, call in (("fwd", forward_call(program, x)),
                            ("fwd+bwd", forward_backward_call(program, x, grad))):
        with autotune.recording() as choices:
            call()
        ran[direction] = (autotune.describe_choices(choices) if choices
                          else "fixed choice (autotuning off)")
    return ran


def make_program(case: Case, provider: str, device: torch.device, dtype: torch.dtype
                 ) -> Program:
    """Provider "eager", "compile" (torch.compile of eager's code) or one of
    :func:`our_backends`' names, for ``case``."""
    if provider in ("eager", "compile"):
        eager = case.reference(device, dtype)
        if provider == "eager":
            return eager
        # dynamic=False: a shape change recompiles instead of a slower dynamic-shape kernel.
        return Program(torch.compile(eager.fn, dynamic=False), eager.params)
    return case.ours(our_backends(device)[provider], device, dtype)


def provider_names(device: torch.device, compile_: bool = True) -> list[str]:
    return ["eager", *(["compile"] if compile_ else []), *our_backends(device)]


def rounds(case: Case, args: argparse.Namespace) -> tuple[int, int]:
    """(warm-up, timed) rounds for ``case``: a third (rounded up) for whole networks."""
    if case.op != "model":
        return args.warmup, args.repeats
    return -(-args.warmup // 3), -(-args.repeats // 3)


def selected_cases(patterns: list[str] | None) -> list[Case]:
    """The cases whose name contains one of ``patterns`` (all when None)."""
    cases = [c for c in CASES if patterns is None or any(p in c.name for p in patterns)]
    if not cases:
        raise SystemExit(f"--only {patterns}: no case matches; the cases are: "
                         + ", ".join(c.name for c in CASES))
    return cases


def run(args: argparse.Namespace, cases: list[Case], device: torch.device, console: Console
        ) -> tuple[list[Accuracy], list[Samples], dict[str, dict[str, str]],
                   dict[str, dict[str, str]]]:
    """Accuracy rows, timing samples, per case the providers that could not run, and per
    case and direction what "ours" ran."""
    dtype, ours = DTYPES[args.dtype], our_backends(device)
    accuracy, samples, unsupported, ran = [], [], {}, {}
    total = sum(len(ours) + sum(rounds(case, args)) for case in cases)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("verifying and timing", total=total)
        for case in cases:
            progress.update(task, description=f"verifying {case.name}")
            x = make_input(case, min(args.batch, ACCURACY_BATCH), dtype, args.channels_last,
                           device)
            float64 = case.float64_reference(device, dtype)
            for name, backend in ours.items():
                accuracy.append(check_accuracy(case, case.ours(backend, device, dtype), name, x,
                                               float64))
                progress.advance(task)
        for case in cases:
            progress.update(task, description=f"timing {case.name}")
            torch._dynamo.reset()  # each case compiles afresh, with no other case's guards
            x = make_input(case, args.batch, dtype, args.channels_last, device)
            providers = {name: make_program(case, name, device, dtype)
                         for name in provider_names(device, not args.no_compile)}
            with torch.no_grad():
                # Ours, not eager: eager has no bfloat16 LRN on the CPU.
                grad = torch.randn_like(providers["native"].fn(x))
            ran[case.name] = ran_by_ours(providers["ours"], x, grad)
            case_samples, errors = time_case(case.name, providers, x, grad, *rounds(case, args),
                                             lambda: progress.advance(task))
            samples += case_samples
            if errors:
                unsupported[case.name] = errors
    return accuracy, samples, unsupported, ran


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _extension.assert_loaded()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Piped output gets rich's 80 columns, too narrow for the timing table.
    console = Console(width=None if sys.stdout.isatty() else 150)
    torch.manual_seed(0)
    cases = selected_cases(args.only)
    accuracy, samples, unsupported, ran = run(args, cases, device, console)
    copy_gbs = copy_bandwidth_gbs(device) if device.type == "cuda" else None
    itemsize = DTYPES[args.dtype].itemsize
    byte_models = {c.name: traffic(c, args.batch, itemsize, device.type) for c in cases}
    summary = report.summarize(samples, byte_models, list(our_backends(device)),
                                      copy_gbs, ran)
    machine = env_report.collect()
    device_name = (machine["gpu"] or {}).get("name") or machine["processor"]
    title = (f"{device_name}, {args.dtype}, batch {args.batch}, "
             f"{'channels_last' if args.channels_last else 'contiguous'}, "
             f"{machine['torch_threads']} threads: median ±IQR of {args.repeats} rounds")
    report.render(accuracy, summary, title, console)
    for case, errors in unsupported.items():
        for provider, error in errors.items():
            console.print(f"not timed: {provider} on {case}: {error}")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    record = {"machine": machine, "device": str(device), "device_name": device_name,
              "settings": settings, "copy_bandwidth_gbs": copy_gbs, "unsupported": unsupported,
              "ours_ran": ran,
              "traffic": {name: m and dataclasses.asdict(m) for name, m in byte_models.items()},
              "samples": [dataclasses.asdict(s) for s in samples]}
    paths = report.write(args.out, record, summary, accuracy, title)
    console.print("wrote " + ", ".join(map(str, paths)))
    return 0 if all(a.passed for a in accuracy) else 1

