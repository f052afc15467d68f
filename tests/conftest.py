"""Shared fixtures: tolerance table, seeded generators and the kernel providers."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Triton's interpreter runs tl.dot as numpy matmuls of small tiles; OpenBLAS
# threads on a busy shared machine make each one about 500x slower than one
# thread does. Read when numpy loads (torch imports it below).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Autotuning (alexnet_kernels.autotune) is off for the suite: the tests check
# specific implementations, and "auto" in them means the fixed choice (the
# compiled kernel) they were written against; timing every new shape would
# make the run slow and what runs depend on the machine's load. The autotune
# tests turn it on themselves (the `autotuning` fixture of test_autotune.py).
# Whatever a test does, decisions go to a folder of this session, never to the
# user's cache; subprocesses inherit both settings. The switch is read when
# alexnet_kernels is imported, so both are set before that.
os.environ["ALEXNET_KERNELS_AUTOTUNE"] = "0"
os.environ["ALEXNET_KERNELS_CACHE_DIR"] = tempfile.mkdtemp(prefix="alexnet-kernels-test-cache-")

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alexnet_kernels.reference import TOLERANCES

# The fuzz tests' example budgets (tests/fuzz_support.py). "ci", the default, is
# derandomized and keeps no database, so every run of the suite draws the same
# examples; "long" (`pytest --hypothesis-profile=long`) draws fresh ones, 25 times
# as many, and replays the failures it finds from a local database first.
_FUZZ_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=40, derandomize=True, database=None,
                          deadline=None, print_blob=True, suppress_health_check=_FUZZ_HEALTH)
settings.register_profile(
    "long", max_examples=1000, deadline=None, print_blob=True,
    suppress_health_check=_FUZZ_HEALTH,
    database=DirectoryBasedExampleDatabase(Path(__file__).resolve().parent.parent
                                           / ".hypothesis" / "examples"))
settings.load_profile("ci")
# Deleted when the session ends (pytest_sessionfinish).
_SESSION_CACHE = os.environ["ALEXNET_KERNELS_CACHE_DIR"]

FLOAT_DTYPES = list(TOLERANCES)
# The dtypes the Triton kernels support (no float64: GPUs have little of it).
TRITON_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Where the Triton tests (tests/triton) run: the GPU, else CPU tensors in
# Triton's interpreter. Triton reads TRITON_INTERPRET when a kernel is defined,
# so it is set here, before any module of alexnet_kernels.triton is imported.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if TRITON_DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"


def assert_close_to_reference(actual: torch.Tensor, expected64: torch.Tensor) -> None:
    """Compare with a float64 reference using the per-dtype tolerance of `actual`."""
    rtol, atol = TOLERANCES[actual.dtype]
    torch.testing.assert_close(actual.double(), expected64, rtol=rtol, atol=atol)


def random_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int,
                  channels_last: bool = False) -> torch.Tensor:
    """Fresh normal samples (never all zeros), reproducible per seed."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last if t.dim() == 4
                         else torch.channels_last_3d)
    return t


# The instruction-set variants of the CPU kernels (csrc/cpu/vectorize.h), widest
# first. The "native" test provider runs the detected one; "native_avx2" and
# "native_baseline" force the narrower ones, so every variant is tested on a
# machine that has them all.
CPU_CAPABILITY_ORDER = ("default", "avx2", "avx512")


@contextlib.contextmanager
def cpu_capability(name: str) -> Iterator[None]:
    """Runs the CPU kernels with instruction set `name` inside the block.

    Skips the test when this CPU cannot run that variant.
    """
    from alexnet_kernels import _extension

    detected = _extension.detected_cpu_capability()
    if CPU_CAPABILITY_ORDER.index(name) > CPU_CAPABILITY_ORDER.index(detected):
        pytest.skip(f"this CPU cannot run the {name} kernels (it has {detected})")
    previous = _extension.cpu_capability()
    _extension.set_cpu_capability(name)
    try:
        yield
    finally:
        _extension.set_cpu_capability(previous)


# Test providers of the compiled CPU kernels -> the instruction set they force.
NATIVE_CPU_PROVIDERS = {"native": None, "native_avx2": "avx2", "native_baseline": "default"}


def native_cpu_context(provider: str) -> contextlib.AbstractContextManager:
    """The instruction-set context of a native CPU provider (see NATIVE_CPU_PROVIDERS)."""
    require_native_cpu()
    forced = NATIVE_CPU_PROVIDERS[provider]
    return cpu_capability(forced) if forced else contextlib.nullcontext()


def require_native_cpu() -> None:
    """Fails (never skips) when the compiled library is missing."""
    from alexnet_kernels import _extension

    if not _extension.is_loaded():
        pytest.fail(f"the compiled library is missing: {_extension.load_error()}")


def require_native_cuda() -> None:
    """Skips unless the library has CUDA kernels and a CUDA device is present."""
    from alexnet_kernels import _extension

    require_native_cpu()
    if not _extension.with_cuda():
        pytest.skip("library built without CUDA kernels")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def assert_compiled_matches_eager(model: torch.nn.Module, x: torch.Tensor) -> None:
    """torch.compile(model, fullgraph=True) gives eager's output and parameter
    gradients (of sum(y^2)) on x: the ops trace without graph breaks."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    y_eager = model(x)
    y_eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_compiled = compiled(x)
    y_compiled.square().sum().backward()
    torch.testing.assert_close(y_compiled, y_eager)
    for p, expected in zip(model.parameters(), eager_grads, strict=True):
        torch.testing.assert_close(p.grad, expected)


def pytest_report_header(config: pytest.Config) -> list[str]:
    import alexnet_kernels

    return [f"alexnet_kernels build: {alexnet_kernels.build_info()}",
            f"cuda available: {torch.cuda.is_available()}"]


# ---- kernel coverage: every __global__ kernel under csrc/ must run in the emulator ----
# Judged at the end of a full run (`pytest tests`); a partial run (-k, a single
# file, a node id, -x stop) cannot tell, so it skips the check and says so.

# Node ids of the test files collected in this session (all of them only when
# their directory was given) and the number of deselected tests.
_collected_files: set[str] = set()
_deselected = 0
# (passed, message) of the check, printed in the terminal summary.
_COVERAGE_RESULT = pytest.StashKey[tuple[bool, str]]()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.passed and "::" not in report.nodeid and report.nodeid.endswith(".py"):
        _collected_files.add(report.nodeid)


def pytest_deselected(items: list[pytest.Item]) -> None:
    global _deselected
    _deselected += len(items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import emulated

    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)

    config = session.config
    test_files = {p.resolve() for pattern in config.getini("python_files")
                  for p in Path(__file__).resolve().parent.rglob(pattern)}
    reason = emulated.coverage_skip_reason(
        test_files,
        {(config.rootpath / nodeid).resolve() for nodeid in _collected_files},
        _deselected,
        node_ids_given=any("::" in str(arg) for arg in config.args),
        tests_ran=not (config.option.collectonly or config.option.setuponly
                       or config.option.setupplan),
        stopped_early=bool(session.shouldstop or session.shouldfail)
        or exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED),
    )
    passed, message = emulated.check_kernel_coverage(reason)
    config.stash[_COVERAGE_RESULT] = (passed, message)
    if not passed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    passed, message = config.stash.get(_COVERAGE_RESULT, (True, ""))
    if not passed:
        terminalreporter.write_sep("=", "kernel coverage", red=True)
    if message:
        terminalreporter.write_line(message)
