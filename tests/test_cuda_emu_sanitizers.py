"""Sanitizer jobs over the real CUDA kernels, run on the CPU by the emulator.

For ThreadSanitizer and for AddressSanitizer + UBSan, a subprocess runs the
small emulated-CUDA cases of the op tests (test_lrn.py, test_max_pool.py,
test_dropout.py, test_conv2d_relu.py; under AddressSanitizer also those of the
fuzz tests, test_fuzz_*.py) against a build of the emulated ops (tests/emulated.py)
instrumented with that sanitizer, with the sanitizer's runtime preloaded into
the (uninstrumented) Python. The job passes when pytest
passes and no sanitizer printed a report.

A second pair of tests runs deliberately broken copies of the LRN forward
kernel (tests/cuda_emu/selftest/broken_lrn.cuh) through the same path and
checks that each sanitizer reports its bug. That also proves the jobs above
really run instrumented code: a job whose sanitizer were silently off would
pass them, these would fail.

How the sanitized Python process is set up, and why:

* LD_PRELOAD=<runtime> (and libstdc++ under AddressSanitizer, see
  cuda_emu/build.py's preload_libraries): an instrumented extension in an
  uninstrumented host needs the runtime loaded first. tests/emulated.py keeps it out of the
  compiler and ninja it starts (ThreadSanitizer breaks ninja's subprocess
  handling; LeakSanitizer would fail the compiler).
* OMP_NUM_THREADS=1: PyTorch's CPU ops (here the float64 reference) run on
  uninstrumented libgomp, whose barriers ThreadSanitizer cannot see; its
  memset interceptor then reports races between OpenMP workers and the main
  thread inside libtorch_cpu (false positives, none in project code). With
  one OpenMP thread those ops run on the calling thread; the emulator's own
  threads (std::thread, instrumented) are unaffected. This removes the cause
  instead of suppressing reports, so no suppression file is needed.
* ASAN_OPTIONS detect_leaks=0: CPython and PyTorch keep memory alive until
  exit by design. Out-of-bounds and use-after-free checks stay on; leaks of
  the emulator itself are checked by the self-test driver (test_cuda_emu.py),
  which runs with detect_leaks=1.
* pytest --capture=sys: with pytest's default fd-level capture, a report
  written during a passing test would be swallowed with its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from emulated import REPO, build_module

build = build_module()

# The test files of the ops, and every emulated-CUDA case in them except the
# AlexNet-sized ones (all dtypes, odd shapes, channels_last, non-contiguous,
# empty, gradcheck, special values): each under a second in either sanitizer.
OP_TEST_FILES = ("tests/test_lrn.py", "tests/test_max_pool.py", "tests/test_dropout.py",
                 "tests/test_conv2d_relu.py")
SMALL_EMULATED_CASES = "emulated_cuda and not alexnet"
# The fuzz tests' emulated cases (random legal and just-illegal calls of the raw ops)
# also run under AddressSanitizer: no argument may reach an out-of-bounds access.
FUZZ_TEST_FILES = ("tests/test_fuzz_lrn.py", "tests/test_fuzz_max_pool.py",
                   "tests/test_fuzz_dropout.py", "tests/test_fuzz_conv2d_relu.py")
JOB_TEST_FILES = {"tsan": OP_TEST_FILES, "asan": OP_TEST_FILES + FUZZ_TEST_FILES}
# Text any sanitizer prints when it reports something.
SANITIZER_MARKERS = (
    "ThreadSanitizer",
    "AddressSanitizer",
    "LeakSanitizer",
    "UndefinedBehaviorSanitizer",
    "runtime error",
)
# The extension build (about 10-40 s on 2 cores) plus the tests.
JOB_TIMEOUT_S = 600


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    seconds: float

    def describe(self) -> str:
        """The exit status, the start of the first sanitizer report (its first frames name
        the bug; a long C++ stack would push them out of the tail) and the output's tail."""
        head = f"exit status {self.returncode} after {self.seconds:.1f} s\n"
        starts = [i for i in (self.output.find(m) for m in SANITIZER_MARKERS) if i >= 0]
        if starts:
            first = self.output.rfind("\n", 0, min(starts)) + 1
            head += f"first report:\n{self.output[first:first + 6000]}\n...\n"
        return head + self.output[-6000:]


def _set_option(options: str, key: str, value: str) -> str:
    """Sets key=value in a sanitizer option string (colon-separated)."""
    kept = [o for o in options.split(":") if o and o.split("=", 1)[0] != key]
    return ":".join([*kept, f"{key}={value}"])


def sanitized_env(sanitizer: str) -> dict[str, str]:
    preload = build.preload_libraries(sanitizer)
    if preload is None:
        pytest.fail(f"the {sanitizer} runtime of {build.compiler()} was not found", pytrace=False)
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)  # the job's pytest options are the ones below
    env.update(build.sanitizer_env(sanitizer))
    if sanitizer == "asan":
        env["ASAN_OPTIONS"] = _set_option(env["ASAN_OPTIONS"], "detect_leaks", "0")
    env["AK_EMU_SANITIZER"] = sanitizer
    env["LD_PRELOAD"] = " ".join(str(p) for p in preload)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_sanitized(sanitizer: str, args: list[str]) -> Run:
    """`python <args>` in the repository root with the sanitizer set up."""
    command = [*build.run_prefix(sanitizer), sys.executable, *args]
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=sanitized_env(sanitizer),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{sanitizer} job did not finish within {JOB_TIMEOUT_S} s: {expired}")
    return Run(done.returncode, done.stdout, time.monotonic() - start)


def summary_counts(output: str) -> dict[str, int]:
    """{'passed': 45, 'deselected': 140, ...} from pytest's final summary line."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if not lines:
        return {}
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", lines[-1])}


def sanitizer_reports(output: str) -> list[str]:
    return [m for m in SANITIZER_MARKERS if m in output]


@pytest.mark.parametrize("sanitizer", ["tsan", "asan"])
def test_real_kernels_under_sanitizer(sanitizer: str) -> None:
    run = run_sanitized(sanitizer, [
        "-m", "pytest", *JOB_TEST_FILES[sanitizer], "-q", "--capture=sys", "-p",
        "no:cacheprovider",
        "-k", SMALL_EMULATED_CASES,
    ])
    counts = summary_counts(run.output)
    assert run.returncode == 0, run.describe()
    assert counts.get("passed", 0) > 0, run.describe()
    failures = sum(counts.get(word, 0) for word in ("failed", "error", "errors"))
    assert failures == 0, run.describe()
    assert not sanitizer_reports(run.output), run.describe()
    print(f"{sanitizer} job: {counts['passed']} passed in {run.seconds:.1f} s")


# Runs a broken kernel through the emulated ops library built for the sanitizer:
# argv = bug, shape, number of launches.
BROKEN_SCRIPT = """
import sys
sys.path.insert(0, "tests")
import torch
import emulated
bug, shape, launches = sys.argv[1], tuple(map(int, sys.argv[2].split(","))), int(sys.argv[3])
x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
for _ in range(launches):
    y = emulated.load().selftest_broken_lrn(x, bug)
print("broken kernel returned; NaN outputs:", int(torch.isnan(y).sum()))
"""


@pytest.mark.parametrize(
    ("sanitizer", "bug", "shape", "launches", "report", "frame"),
    [
        # Deterministic as well: the emulator declares to ThreadSanitizer only the
        # orderings a GPU guarantees (EngineSection in emu_runtime.h), so threads
        # that the OS happens to run one after another still race. Measured on
        # 2 cores: 340-400 racing addresses in each of 12 runs of this input.
        ("tsan", "missing-barrier", "2,7,5,3", 1, "WARNING: ThreadSanitizer: data race",
         "broken::lrn_forward_no_barrier<float>"),
        # The read one float past the shared buffer hits its redzone.
        ("asan", "off-by-one", "2,7,5,3", 1, "ERROR: AddressSanitizer: heap-buffer-overflow",
         "broken::lrn_forward_off_by_one<float>"),
    ],
    ids=["tsan-missing-barrier", "asan-off-by-one"],
)
def test_sanitizer_catches_a_broken_kernel(sanitizer: str, bug: str, shape: str, launches: int,
                                           report: str, frame: str) -> None:
    run = run_sanitized(sanitizer, ["-c", BROKEN_SCRIPT, bug, shape, str(launches)])
    assert run.returncode != 0, run.describe()
    assert report in run.output, run.describe()
    assert frame in run.output, run.describe()
    assert "broken_lrn.cuh:" in run.output, run.describe()  # file:line of the bug
