"""pytest configuration: environment settings made before anything is imported, the fuzz
profiles, and the hooks (kernel coverage). What tests share lives in helpers.py and, per
op, in cases/."""

from __future__ import annotations

import os
import shutil
import tempfile
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

# Under pytest-xdist (`-n 2`) the workers share the cores: one OpenMP thread each,
# or two workers' torch ops spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from helpers import TRITON_DEVICE
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

# The shared test bodies in cases/ hold the op tests' asserts: rewritten like those of
# test files, so that a failing one still shows its operands.
pytest.register_assert_rewrite("cases")

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

# Triton reads TRITON_INTERPRET when a kernel is defined, so it is set here,
# before any module of alexnet_kernels.triton is imported.
if TRITON_DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_report_header(config: pytest.Config) -> list[str]:
    import alexnet_kernels

    return [f"alexnet_kernels build: {alexnet_kernels.build_info()}",
            f"cuda available: {torch.cuda.is_available()}"]


# ---- kernel coverage: every __global__ kernel under csrc/ must run in the emulator ----
# Judged at the end of a full run (`pytest tests`); a partial run (-k, a single
# file, a node id, -x stop) cannot tell, so it skips the check and says so. Under
# pytest-xdist every worker collects the whole suite and runs part of it: each
# reports its verdict on the run and the kernels it launched (workeroutput), and
# the controller judges their union.

# Node ids of the test files collected in this session (all of them only when
# their directory was given) and the number of deselected tests.
_collected_files: set[str] = set()
_deselected = 0
# (passed, message) of the check, printed in the terminal summary.
_COVERAGE_RESULT = pytest.StashKey[tuple[bool, str]]()
# What the xdist workers reported: (skip reason or None, launched kernels) each.
_worker_reports: list[tuple[str | None, list[str]]] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.passed and "::" not in report.nodeid and report.nodeid.endswith(".py"):
        _collected_files.add(report.nodeid)


def pytest_deselected(items: list[pytest.Item]) -> None:
    global _deselected
    _deselected += len(items)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """An xdist worker finished (a hook of pytest-xdist, called on the controller)."""
    output = getattr(node, "workeroutput", {})
    if "kernel_coverage_skip" in output:
        _worker_reports.append((output["kernel_coverage_skip"], output["launched_kernels"]))
    else:  # the worker crashed before its sessionfinish
        _worker_reports.append((f"worker {node.gateway.id} did not finish", []))


def _stopped_early(session: pytest.Session, exitstatus: int) -> bool:
    return bool(session.shouldstop or session.shouldfail) or exitstatus not in (
        pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)


def _coverage_skip_reason(session: pytest.Session, exitstatus: int) -> str | None:
    """Why this process's run cannot judge kernel coverage (None: a full run)."""
    import emulated

    config = session.config
    test_files = {p.resolve() for pattern in config.getini("python_files")
                  for p in Path(__file__).resolve().parent.rglob(pattern)}
    return emulated.coverage_skip_reason(
        test_files,
        {(config.rootpath / nodeid).resolve() for nodeid in _collected_files},
        _deselected,
        node_ids_given=any("::" in str(arg) for arg in config.args),
        tests_ran=not (config.option.collectonly or config.option.setuponly
                       or config.option.setupplan),
        stopped_early=_stopped_early(session, exitstatus),
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import emulated

    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
    config = session.config
    if hasattr(config, "workerinput"):  # an xdist worker: the controller judges
        config.workeroutput["kernel_coverage_skip"] = _coverage_skip_reason(session, exitstatus)
        config.workeroutput["launched_kernels"] = sorted(emulated.launched_kernels())
        return
    if _worker_reports:  # the xdist controller: it collected nothing itself
        reasons = [r for r, _ in _worker_reports if r is not None]
        reason = reasons[0] if reasons else (
            "the session stopped early" if _stopped_early(session, exitstatus) else None)
        launched = {name for _, names in _worker_reports for name in names}
    else:
        reason, launched = _coverage_skip_reason(session, exitstatus), None
    passed, message = emulated.check_kernel_coverage(reason, launched)
    config.stash[_COVERAGE_RESULT] = (passed, message)
    if not passed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    passed, message = config.stash.get(_COVERAGE_RESULT, (True, ""))
    if not passed:
        terminalreporter.write_sep("=", "kernel coverage", red=True)
    if message:
        terminalreporter.write_line(message)
