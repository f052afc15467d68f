"""What this installation is and can run, for bug reports.

    python -m alexnet_kernels.env_report [--json]

Versions (Python, torch, triton, numpy, the CUDA torch was built with), how the
compiled library was built (CUDA kernels? for which architectures; the CPU
instruction set detected and the one selected), the backends usable per
device type, the GPU if there is one, and whether ``backend="auto"`` autotunes
and where it keeps its decisions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform

import torch
from rich.console import Console
from rich.table import Table

from alexnet_kernels import _extension
from alexnet_kernels.triton import triton_installed


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name where the OS tells it (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_capability() -> dict[str, str] | None:
    if not _extension.is_loaded():
        return None
    return {"detected": _extension.detected_cpu_capability(),
            "selected": _extension.cpu_capability()}


def _backends() -> dict[str, list[str]]:
    """The concrete backends that can run on each device type in this process."""
    native = _extension.native_device_types()
    cpu = ["torch"] + (["native"] if "cpu" in native else [])
    if triton_installed():
        cpu.append("triton (interpreter, with TRITON_INTERPRET=1)")
    if not torch.cuda.is_available():
        return {"cpu": cpu, "cuda": []}
    cuda = ["torch"] + (["native"] if "cuda" in native else [])
    return {"cpu": cpu, "cuda": cuda + (["triton"] if triton_installed() else [])}


def _gpu() -> dict[str, object] | None:
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return {"name": torch.cuda.get_device_name(), "capability": f"{major}.{minor}",
            "count": torch.cuda.device_count()}


def _autotune() -> dict[str, object]:
    from alexnet_kernels import autotune

    return {"enabled": autotune.enabled(), "cache_dir": str(autotune.cache_dir()),
            "cache_files": [p.name for p in autotune.cache_files()]}


def collect() -> dict[str, object]:
    """The report as a JSON-serialisable dict."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": cpu_name(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": _gpu(),
        "torch_threads": torch.get_num_threads(),
        # fp32 convolutions on GPUs (cuDNN's, ours, Triton's) use TF32 when this is set.
        "conv_allow_tf32": torch.backends.cudnn.allow_tf32,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
        "build": _extension.build_info(),
        "cpu_capability": _cpu_capability(),
        "backends": _backends(),
        # backend="auto" by measurement (python -m alexnet_kernels.autotune show).
        "autotune": _autotune(),
    }


def _text(value: object) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return "-" if value is None else str(value)


def render(report: dict[str, object], console: Console) -> None:
    table = Table(title="alexnet_kernels environment")
    table.add_column("item")
    table.add_column("value")
    for key, value in report.items():
        table.add_row(key, _text(value))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Report versions, build and backends.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report, Console())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
