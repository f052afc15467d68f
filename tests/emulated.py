"""Builds and loads the CUDA kernels compiled for the CPU emulator (tests/cuda_emu).

``load()`` compiles tests/cuda_emu/emulated_ops.cpp (the real kernel headers and
their host glue) with the emulator's flags into ``.emu-build/<variant>`` and
registers ``torch.ops.alexnet_kernels_emu.*`` for CPU tensors. The variant is
taken from ``AK_EMU_SANITIZER`` (none, tsan, asan): sanitizer variants are used by
the sanitizer jobs, which run pytest in a subprocess with the runtime preloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import torch
import torch.utils.cpp_extension

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EMU = TESTS / "cuda_emu"


def build_module() -> ModuleType:
    """The emulator's flag helper (tests/cuda_emu/build.py), imported by path."""
    spec = importlib.util.spec_from_file_location("cuda_emu_build", EMU / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sanitizer() -> str:
    return os.environ.get("AK_EMU_SANITIZER", "none")


@functools.cache
def load() -> object:
    """Compile (cached by torch on source changes) and load the emulated ops."""
    build = build_module()
    variant = sanitizer()
    build_dir = REPO / ".emu-build" / variant
    build_dir.mkdir(parents=True, exist_ok=True)
    # Optimise the plain build so emulated tests stay quick; sanitizer builds
    # keep -O1 for readable reports.
    level = "-O2" if variant == "none" else "-O1"
    cflags = [*build.compile_flags(variant, optimization=level), f"-I{REPO / 'csrc'}"]
    torch.utils.cpp_extension.load(
        name=f"alexnet_kernels_emu_{variant}",
        sources=[str(EMU / "emulated_ops.cpp")],
        extra_cflags=cflags,
        extra_ldflags=build.link_flags(variant),
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.alexnet_kernels_emu
