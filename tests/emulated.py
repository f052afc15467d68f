"""Builds and loads the CUDA kernels compiled for the CPU emulator (tests/cuda_emu).

``load()`` compiles tests/cuda_emu/emulated_*.cpp (the real kernel headers and
their host glue, one file per op so that ninja builds them in parallel) with the
emulator's flags into ``.emu-build/<variant>`` and registers
``torch.ops.alexnet_kernels_emu.*`` for CPU tensors. The variant is taken from
``AK_EMU_SANITIZER`` (none, tsan, asan): sanitizer variants are used by the
sanitizer jobs, which run pytest in a subprocess with the runtime preloaded.

It also holds the kernel coverage check (run by tests/conftest.py at the end of
a full test run): every ``__global__`` kernel under csrc/ must have been
launched through the emulator.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EMU = TESTS / "cuda_emu"
CSRC = REPO / "csrc"


def build_module() -> ModuleType:
    """The emulator's flag helper (tests/cuda_emu/build.py), imported by path."""
    spec = importlib.util.spec_from_file_location("cuda_emu_build", EMU / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sanitizer() -> str:
    return os.environ.get("AK_EMU_SANITIZER", "none")


# Sanitizer runtimes (GCC's and Clang's) as they appear in LD_PRELOAD.
_SANITIZER_RUNTIME = re.compile(r"^lib(?:a|t|ub|l|m|hwa)san\.so|^libclang_rt\.[\w-]*san")


@contextlib.contextmanager
def _build_tools_without_sanitizer_runtime() -> Iterator[None]:
    """Keeps a preloaded sanitizer runtime out of the compiler and ninja.

    The sanitizer jobs preload the runtime into Python, and child processes
    inherit LD_PRELOAD. ThreadSanitizer's interceptors break ninja's process
    handling (every command then "fails" without a message), and LeakSanitizer
    would fail the compiler, which frees nothing on exit. The tools are not
    what is being checked, so they run without it; this process keeps it
    (LD_PRELOAD only acts when a process starts).
    """
    saved = os.environ.get("LD_PRELOAD")
    if saved is None:
        yield
        return
    kept = [p for p in re.split(r"[\s:]+", saved)
            if p and not _SANITIZER_RUNTIME.match(Path(p).name)]
    if kept:
        os.environ["LD_PRELOAD"] = " ".join(kept)
    else:
        del os.environ["LD_PRELOAD"]
    try:
        yield
    finally:
        os.environ["LD_PRELOAD"] = saved


@functools.cache
def load() -> object:
    """Compile (cached by torch on source changes) and load the emulated ops."""
    import torch.utils.cpp_extension  # imported here: it warns when no CUDA runtime is found

    build = build_module()
    variant = sanitizer()
    build_dir = REPO / ".emu-build" / variant
    build_dir.mkdir(parents=True, exist_ok=True)
    # Optimise the plain build so emulated tests stay quick; sanitizer builds
    # keep -O1 for readable reports.
    level = "-O2" if variant == "none" else "-O1"
    cflags = [*build.compile_flags(variant, optimization=level), f"-I{CSRC}"]
    with _build_tools_without_sanitizer_runtime():
        torch.utils.cpp_extension.load(
            name=f"alexnet_kernels_emu_{variant}",
            sources=[str(path) for path in sorted(EMU.glob("emulated_*.cpp"))],
            extra_cflags=cflags,
            # -ldl: dladdr, which names launched kernels (glibc < 2.34 needs it).
            extra_ldflags=[*build.link_flags(variant), "-ldl"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    return torch.ops.alexnet_kernels_emu


# ---- kernel coverage ------------------------------------------------------------

def launched_kernels() -> set[str]:
    """Base names of the kernels this process launched through the emulator.

    Empty when the emulated ops were never loaded (nothing can have run then);
    does not build or load them.
    """
    if load.cache_info().currsize == 0:
        return set()
    return set(torch.ops.alexnet_kernels_emu.launched_kernels())


_COMMENT_OR_STRING = re.compile(
    r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.DOTALL)
_TOKEN = re.compile(r"\s*(\w+|\[\[|\]\]|\S)")
# What may stand between __global__ and the kernel's name: plain words, and
# words with a parenthesised argument list (skipped, whatever it contains).
_SPECIFIERS = {"void", "static", "inline", "__noinline__", "__forceinline__"}
_WITH_ARGUMENTS = {"__launch_bounds__", "__attribute__", "__maxnreg__", "__cluster_dims__"}


def _skip_group(tokens: Iterator[str], opening: str, closing: str) -> bool:
    """Consumes a balanced group whose opening token was just read."""
    depth = 1
    for token in tokens:
        depth += (token == opening) - (token == closing)
        if depth == 0:
            return True
    return False


def _kernel_name_after(code: str, pos: int) -> str | None:
    """The name of the kernel whose __global__ ends at ``pos``, or None."""
    tokens = (m.group(1) for m in _TOKEN.finditer(code, pos))
    for token in tokens:
        if token in _SPECIFIERS:
            continue
        if token in _WITH_ARGUMENTS:
            if next(tokens, None) != "(" or not _skip_group(tokens, "(", ")"):
                return None
            continue
        if token == "[[":
            if not _skip_group(tokens, "[[", "]]"):
                return None
            continue
        if re.fullmatch(r"[A-Za-z_]\w*", token) and next(tokens, None) == "(":
            return token
        return None
    return None


def kernel_names_in_source(text: str) -> list[str]:
    """Names of the ``__global__`` functions defined or declared in C++/CUDA text.

    Comments and string literals are ignored. Raises ValueError when a
    ``__global__`` is not followed by specifiers, attributes or
    __launch_bounds__(...) and then a name and "(", so that a kernel written
    in a form this parser does not know is never silently left out.
    """
    code = _COMMENT_OR_STRING.sub(
        lambda m: '""' if m.group(0)[0] in "\"'" else " " + "\n" * m.group(0).count("\n"), text)
    names = []
    for keyword in re.finditer(r"\b__global__\b", code):
        name = _kernel_name_after(code, keyword.end())
        if name is None:
            line = code.count("\n", 0, keyword.start()) + 1
            raise ValueError(f"cannot tell the kernel name after __global__ on line {line}; "
                             "extend kernel_names_in_source() for this form")
        names.append(name)
    return names


# CUDA sources and the headers they may include.
_SOURCE_SUFFIXES = {".cu", ".cuh", ".h", ".hpp", ".cpp", ".cc", ".cxx"}


def csrc_kernels(root: Path = CSRC) -> dict[str, list[Path]]:
    """Every ``__global__`` kernel in the C++/CUDA sources under ``root``: name -> files."""
    kernels: dict[str, list[Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix in _SOURCE_SUFFIXES):
        for name in kernel_names_in_source(path.read_text()):
            kernels.setdefault(name, []).append(path)
    return kernels


def missing_kernels(defined: Iterable[str], launched: Iterable[str]) -> list[str]:
    """The defined kernels that were never launched, sorted."""
    return sorted(set(defined) - set(launched))


def coverage_skip_reason(test_files: Iterable[Path], visited: Iterable[Path],
                         deselected: int, node_ids_given: bool, tests_ran: bool,
                         stopped_early: bool) -> str | None:
    """Why a session cannot judge kernel coverage, or None for a full run.

    A full run runs the tests (not --collect-only), visits every test file,
    deselects nothing (-k, -m, --deselect, --lf), is not given test node ids
    and does not stop early (-x, --maxfail, an interrupt).
    """
    if not tests_ran:
        return "the tests were not run"
    if stopped_early:
        return "the session stopped early"
    if node_ids_given:
        return "single tests were selected by node id"
    if deselected:
        return f"{deselected} test(s) were deselected (-k/-m/--deselect/--lf)"
    unvisited = sorted(set(test_files) - set(visited))
    if unvisited:
        names = ", ".join(p.name for p in unvisited[:3])
        more = f" and {len(unvisited) - 3} more" if len(unvisited) > 3 else ""
        return f"not every test file was collected (not: {names}{more})"
    return None


def check_kernel_coverage(skip_reason: str | None,
                          launched: Iterable[str] | None = None) -> tuple[bool, str]:
    """(passed, message) of the coverage check at the end of a session; ``launched``: the
    kernels launched by every process of the session (default: by this one)."""
    if skip_reason is not None:
        return True, f"kernel coverage check skipped: {skip_reason}"
    defined = csrc_kernels()
    missing = missing_kernels(defined, launched_kernels() if launched is None else set(launched))
    if not missing:
        return True, (f"kernel coverage: all {len(defined)} __global__ kernels under csrc/ "
                      "ran in the emulator")
    listed = "\n".join(
        f"  {name} ({', '.join(str(p.relative_to(CSRC.parent)) for p in defined[name])})"
        for name in missing)
    return False, ("kernel coverage FAILED: these __global__ kernels under csrc/ were never "
                   f"launched through the CUDA emulator in this run:\n{listed}\n"
                   "Add a test that runs them via tests/emulated.py (see the emulated_cuda "
                   "provider in tests/test_lrn.py).")
