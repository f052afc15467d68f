"""Compiler flags for building C++ against the CUDA emulator in this folder.

The emulator lets the torch-free kernel headers in ``csrc/kernels`` run on the
CPU when compiled by g++ with ``-DAK_CUDA_EMULATION``. This module only knows
paths and flags (no torch import), so any test can use it, e.g. to build a
torch extension that runs the real kernels through the emulator::

    flags = build.compile_flags("tsan")
    torch.utils.cpp_extension.load(
        name="ak_emu_ext", sources=[...],
        extra_cflags=flags,  # contains -std=c++20, so torch adds no -std of its own
        extra_ldflags=build.link_flags("tsan"),
    )

A sanitizer-instrumented extension loaded into an uninstrumented Python needs
the sanitizer runtime preloaded: ``LD_PRELOAD=<sanitizer_runtime(...)>``.

``tests`` is not a package, so import this file by path::

    spec = importlib.util.spec_from_file_location("cuda_emu_build", path_to_this_file)
"""

from __future__ import annotations

import functools
import glob
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Literal

Sanitizer = Literal["none", "tsan", "asan"]
SANITIZERS: tuple[Sanitizer, ...] = ("none", "tsan", "asan")

EMU_DIR = Path(__file__).resolve().parent
REPO_ROOT = EMU_DIR.parent.parent
KERNELS_DIR = REPO_ROOT / "csrc" / "kernels"

# "asan" is AddressSanitizer plus UBSan; every UBSan finding is fatal so that
# a test cannot pass with a report buried in its output.
_SANITIZER_FLAGS: dict[Sanitizer, tuple[str, ...]] = {
    "none": (),
    "tsan": ("-fsanitize=thread",),
    "asan": (
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
    ),
}

# Runtime options: make every report fail the process, with useful stacks.
_SANITIZER_ENV: dict[Sanitizer, dict[str, str]] = {
    "none": {},
    "tsan": {"TSAN_OPTIONS": "halt_on_error=0:exitcode=66:second_deadlock_stack=1"},
    "asan": {
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    },
}

_SANITIZER_RUNTIME: dict[Sanitizer, str | None] = {
    "none": None,
    "tsan": "libtsan.so",
    "asan": "libasan.so",
}


class EmulatorToolchainError(RuntimeError):
    """The host compiler or the CUDA headers the emulator needs are missing."""


def compiler() -> str:
    """The host C++ compiler: $CXX, else g++ (must be on the PATH)."""
    cxx = os.environ.get("CXX", "g++")
    found = shutil.which(cxx)
    if found is None:
        raise EmulatorToolchainError(
            f"C++ compiler {cxx!r} not found; the CUDA emulator needs g++ with C++20 support"
        )
    return found


def find_cuda_include_dir() -> Path:
    """The CUDA toolkit's include folder (the one holding cuda_runtime.h).

    Only the headers are used (vector types, __half, __nv_bfloat16); no CUDA
    library is linked and no GPU is needed. Looks at $CUDA_HOME, $CUDA_PATH,
    /usr/local/cuda and then /usr/local/cuda-* (newest version first).
    """
    candidates: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            candidates.append(Path(value) / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    versioned = sorted(
        glob.glob("/usr/local/cuda-*/include"),
        key=lambda p: [int(x) if x.isdigit() else -1 for x in Path(p).parent.name[5:].split(".")],
        reverse=True,
    )
    candidates.extend(Path(p) for p in versioned)
    for folder in candidates:
        if (folder / "cuda_runtime.h").is_file():
            return folder
    searched = ", ".join(str(c) for c in candidates) or "(nothing)"
    raise EmulatorToolchainError(
        "CUDA headers (cuda_runtime.h) not found; set CUDA_HOME to a CUDA toolkit. "
        f"Searched: {searched}"
    )


def include_dirs() -> list[Path]:
    """Emulator headers, kernel headers, CUDA headers, in that order."""
    return [EMU_DIR, KERNELS_DIR, find_cuda_include_dir()]


def sanitizer_flags(sanitizer: Sanitizer) -> list[str]:
    """Flags selecting a sanitizer; needed both when compiling and linking."""
    if sanitizer not in _SANITIZER_FLAGS:
        raise ValueError(f"unknown sanitizer {sanitizer!r}; expected one of {SANITIZERS}")
    return list(_SANITIZER_FLAGS[sanitizer])


def compile_flags(sanitizer: Sanitizer = "none", optimization: str = "-O1") -> list[str]:
    """Everything needed to compile a translation unit against the emulator.

    -O1 keeps sanitizer builds fast while leaving stacks readable; -g gives
    file:line in reports.
    """
    emu, kernels, cuda = include_dirs()
    # The toolkit's headers are system headers: their warnings are not ours.
    includes = [f"-I{emu}", f"-I{kernels}", "-isystem", str(cuda)]
    return [
        "-std=c++20",
        "-pthread",
        "-DAK_CUDA_EMULATION",
        optimization,
        "-g",
        *includes,
        *sanitizer_flags(sanitizer),
    ]


def link_flags(sanitizer: Sanitizer = "none") -> list[str]:
    """Flags for the link step (the sanitizer runtime and pthreads)."""
    return ["-pthread", *sanitizer_flags(sanitizer)]


def sanitizer_env(sanitizer: Sanitizer) -> dict[str, str]:
    """Environment variables to run an instrumented program with."""
    sanitizer_flags(sanitizer)  # validates the name
    return dict(_SANITIZER_ENV[sanitizer])


@functools.cache
def _setarch_works() -> bool:
    setarch = shutil.which("setarch")
    if setarch is None:
        return False
    probe = subprocess.run(
        [setarch, platform.machine(), "-R", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


def run_prefix(sanitizer: Sanitizer) -> list[str]:
    """Command prefix for running an instrumented program.

    ThreadSanitizer of GCC 12 expects the memory layout of a kernel with at most
    28 bits of mmap randomisation; on kernels configured with more (e.g.
    vm.mmap_rnd_bits=32) it dies with "FATAL: ThreadSanitizer: unexpected
    memory mapping". Running it with address-space randomisation disabled
    (``setarch <arch> -R``) avoids that on every kernel, and costs nothing.
    """
    if sanitizer == "tsan" and _setarch_works():
        return ["setarch", platform.machine(), "-R"]
    return []


def sanitizer_runtime(sanitizer: Sanitizer) -> Path | None:
    """The sanitizer's shared runtime, for LD_PRELOAD into an uninstrumented host."""
    library = _SANITIZER_RUNTIME[sanitizer]
    if library is None:
        return None
    out = subprocess.run(
        [compiler(), f"-print-file-name={library}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = Path(out)
    return path if path.is_absolute() and path.exists() else None


def preload_libraries(sanitizer: Sanitizer) -> list[Path] | None:
    """What LD_PRELOAD must list for an instrumented extension in an uninstrumented host
    (None where the sanitizer's runtime is not found).

    AddressSanitizer intercepts ``__cxa_throw`` and looks up the real one when its
    runtime starts; Python does not link libstdc++, so there is none yet, and the first
    C++ exception (any TORCH_CHECK that refuses an argument) dies in the interceptor's
    CHECK instead of propagating. Preloading libstdc++ after the runtime gives the
    lookup its target.
    """
    runtime = sanitizer_runtime(sanitizer)
    if runtime is None or sanitizer != "asan":
        return None if runtime is None else [runtime]
    cxx = subprocess.run([compiler(), "-print-file-name=libstdc++.so.6"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return [runtime, *([Path(cxx)] if Path(cxx).is_absolute() and Path(cxx).exists() else [])]
