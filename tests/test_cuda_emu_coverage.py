"""The kernel coverage check: every __global__ kernel under csrc/ must be
launched through the CUDA emulator during a full test run.

The check itself runs at the end of the session (tests/conftest.py,
pytest_sessionfinish) with the helpers in tests/emulated.py; these tests cover
its parts (source parser, comparison, when to skip), the launch record of the
emulated ops library, and the hook end to end on a fake project.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import emulated
import pytest
import torch
from helpers import random_tensor

TESTS = Path(__file__).resolve().parent

# Forms a kernel may be written in; the commented-out and quoted ones are not kernels.
FAKE_SOURCE = """
// __global__ void commented_out(float* x);
/* __global__ void block_commented(float* x) {} */
template <typename T, bool kFlag>
__global__ void __launch_bounds__(kThreads)
    templated_kernel(const T* __restrict__ x, T* y) {}
__global__ void __launch_bounds__(kThreads, ak_min(2, kBlocks(3))) nested_bounds(int n) {}
__global__ __attribute__((unused)) [[maybe_unused]] void attributed(int* x) {}
__global__ void plain(float* x);
__global__ void plain(float* x) { const char* s = "__global__ void in_string("; }
extern "C" __global__ void c_linkage (int*);
static __global__ void static_kernel() {}
__global__ static void static_after() {}
"""


def test_parser_finds_every_form_of_kernel() -> None:
    assert emulated.kernel_names_in_source(FAKE_SOURCE) == [
        "templated_kernel", "nested_bounds", "attributed", "plain", "plain", "c_linkage",
        "static_kernel", "static_after",
    ]


@pytest.mark.parametrize("source", [
    "#define AK_KERNEL __global__ void\nAK_KERNEL hidden(int* x) {}\n",
    "template <>\n__global__ void specialised<float>(float* x) {}\n",
    "/* a\n comment */\n__global__ void __launch_bounds__ broken(int* x) {}\n",
])
def test_parser_refuses_what_it_does_not_understand(source: str) -> None:
    """A __global__ it cannot attribute to a name is an error, never a kernel left out."""
    line = source.count("\n", 0, source.index("__global__")) + 1
    with pytest.raises(ValueError, match=f"after __global__ on line {line};"):
        emulated.kernel_names_in_source(source)


def test_csrc_kernels_scans_sources_and_headers(tmp_path: Path) -> None:
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "a.cuh").write_text("__global__ void a_kernel(int* x) {}\n")
    (tmp_path / "b.cu").write_text(
        "__global__ void b_kernel(int* x);\n__global__ void a_kernel(int* x);\n")
    (tmp_path / "c.h").write_text("__global__ void c_kernel(int* x);\n")
    (tmp_path / "notes.md").write_text("__global__ void not_source(int* x);\n")
    found = emulated.csrc_kernels(tmp_path)
    assert sorted(found) == ["a_kernel", "b_kernel", "c_kernel"]
    assert found["a_kernel"] == [tmp_path / "b.cu", tmp_path / "kernels" / "a.cuh"]


def test_the_real_kernels_are_found() -> None:
    """The parser sees the project's kernels (an empty list would pass any check)."""
    found = emulated.csrc_kernels()
    assert {"lrn_forward_kernel", "lrn_backward_kernel"} <= set(found)


def test_missing_kernels() -> None:
    defined = ["lrn_forward_kernel", "lrn_backward_kernel", "maxpool_kernel"]
    launched = {"lrn_backward_kernel", "lrn_forward_kernel", "lrn_forward_no_barrier"}
    assert emulated.missing_kernels(defined, launched) == ["maxpool_kernel"]
    assert emulated.missing_kernels(defined, [*defined, "extra"]) == []
    assert emulated.missing_kernels(defined, []) == sorted(defined)


def test_coverage_skip_reason() -> None:
    files = {Path("/t/test_a.py"), Path("/t/test_b.py")}

    def reason(visited=files, deselected=0, node_ids=False, ran=True, stopped=False):
        return emulated.coverage_skip_reason(files, visited, deselected, node_ids, ran, stopped)

    assert reason() is None
    assert "test_b.py" in reason(visited={Path("/t/test_a.py")})
    assert "deselected" in reason(deselected=3)
    assert "node id" in reason(node_ids=True)
    assert "not run" in reason(ran=False)
    assert "stopped early" in reason(stopped=True)


def test_launched_kernels_names_the_real_kernels() -> None:
    """The emulator records launches by address; dladdr + demangling give the
    kernels' base names (no namespace, template arguments or parameters)."""
    ops = emulated.load()
    x = random_tensor((2, 6, 3, 4), torch.float32, seed=61)
    y = ops.lrn(x, 3, 0.5, 0.75, 1.0)
    ops.lrn_backward(torch.ones_like(x), x, y, 3, 0.5, 0.75, 1.0)
    launched = set(ops.launched_kernels())
    assert {"lrn_forward_kernel", "lrn_backward_kernel"} <= launched
    assert not [name for name in launched if not name.isidentifier()], launched
    assert launched == emulated.launched_kernels()


# ---- the session hook end to end, on a fake project -------------------------------

FAKE_TEST = """
import emulated


def test_launches_nothing():
    pass


def test_pretends_to_launch():
    if PRETEND:  # stands for an emulated test that launched fake_kernel
        emulated.launched_kernels = lambda: {"fake_kernel"}
"""


def run_fake_project(tmp_path: Path, args: list[str], pretend: bool) -> subprocess.CompletedProcess:
    """pytest in a copy of tests/conftest.py, helpers.py and emulated.py next to a
    fake csrc/ with one kernel, fake_kernel, which nothing really launches."""
    (tmp_path / "csrc" / "kernels").mkdir(parents=True)
    (tmp_path / "csrc" / "kernels" / "fake.cuh").write_text(
        "template <typename T>\n__global__ void __launch_bounds__(64) fake_kernel(T* x) {}\n")
    # rootdir tmp_path and tests/ on sys.path, as in the repo's pyproject.toml
    (tmp_path / "pytest.ini").write_text("[pytest]\npythonpath = tests\n")
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in ("conftest.py", "helpers.py", "emulated.py"):
        shutil.copy(TESTS / name, tests / name)
    (tests / "test_fake.py").write_text(f"PRETEND = {pretend}\n" + textwrap.dedent(FAKE_TEST))
    (tests / "test_other.py").write_text("def test_other():\n    pass\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


# In one process, and on two pytest-xdist workers (the controller judges the kernels
# the workers launched together: the one that ran test_pretends_to_launch has it).
WORKERS = pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])


@WORKERS
def test_full_run_fails_when_a_kernel_never_ran(tmp_path: Path, workers: list[str]) -> None:
    done = run_fake_project(tmp_path, ["tests", *workers], pretend=False)
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "3 passed" in output, output
    assert "kernel coverage FAILED" in output, output
    assert "fake_kernel (csrc/kernels/fake.cuh)" in output, output


@WORKERS
def test_full_run_passes_when_every_kernel_ran(tmp_path: Path, workers: list[str]) -> None:
    done = run_fake_project(tmp_path, ["tests", *workers], pretend=True)
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.OK, output
    assert "kernel coverage: all 1 __global__ kernels under csrc/ ran in the emulator" in output


@pytest.mark.parametrize(("args", "reason"), [
    (["tests", "-k", "other"], "2 test(s) were deselected"),
    (["tests/test_other.py"], "not every test file was collected (not: test_fake.py)"),
    (["tests/test_fake.py::test_launches_nothing", "tests/test_other.py"],
     "single tests were selected by node id"),
    (["tests", "--collect-only"], "the tests were not run"),
], ids=["-k", "one-file", "node-id", "collect-only"])
def test_partial_run_skips_the_check(tmp_path: Path, args: list[str], reason: str) -> None:
    done = run_fake_project(tmp_path, args, pretend=False)
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.OK, output
    assert f"kernel coverage check skipped: {reason}" in output, output
