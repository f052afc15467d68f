"""Triton kernels, one module per op (``lrn.py``, ``max_pool.py``, ``dropout.py``,
``conv2d_relu.py``).

Each op module registers its kernels as ``torch.library.triton_op`` ops with
autograd (so ``torch.compile`` sees through them) and lists them in
``AOT_KERNELS`` for ``scripts/triton_aot_report.py``, which compiles every
kernel and autotune config for real GPU targets without a GPU.

The kernels run on CUDA tensors, and on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, set before the op modules are imported), which is how
the test suite runs them on machines without a GPU. The interpreter runs one
autotune config (:func:`autotune_configs`): autotuning needs a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch


def interpreting() -> bool:
    """Whether Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def check_usable(op: str, device: torch.device) -> None:
    """Raises a RuntimeError saying why ``backend="triton"`` cannot run ``op`` on ``device``."""
    if not triton_installed():
        raise RuntimeError(f"{op}: backend='triton' needs the triton package (pip install triton)")
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return
    raise RuntimeError(
        f"{op}: backend='triton' runs on CUDA tensors (or on CPU tensors under Triton's "
        f"interpreter, TRITON_INTERPRET=1), got a {device.type} tensor")


def autotune_configs(configs: list, default: Any) -> list:
    """The configs to autotune over: all on a GPU, only ``default`` in the interpreter."""
    return [default] if interpreting() else configs


@dataclasses.dataclass(frozen=True)
class AotKernel:
    """One kernel specialisation to compile ahead of time for the resource report.

    ``signature`` maps each argument of ``fn`` to a Triton type ("*fp32", "i32",
    "i64", "fp32", ..., or "constexpr"); ``constexprs`` gives the constexpr values
    (block sizes of one autotune config, dtype switches). ``tensor_cores`` marks a
    kernel whose SASS must contain tensor-core instructions (the report checks it).
    """

    name: str
    fn: Callable
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int = 1
    tensor_cores: bool = False


# Modules that define AOT_KERNELS, for scripts/triton_aot_report.py.
OP_MODULES = ("alexnet_kernels.triton.lrn", "alexnet_kernels.triton.max_pool",
              "alexnet_kernels.triton.dropout", "alexnet_kernels.triton.conv2d_relu")
