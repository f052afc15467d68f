"""Self-tests of the CUDA emulator (tests/cuda_emu).

A C++ driver (tests/cuda_emu/selftest) runs toy kernels through the emulator.
It is built three times: plain, with ThreadSanitizer, and with
AddressSanitizer + UBSan. Correct kernels must give exact results with no
sanitizer report in every build; each deliberately broken kernel must be
caught by the check meant for it.

The plain build also runs in the emulator's fiber mode (AK_EMU_MODE=fibers).

The builds are cached in the pytest cache (or a temporary folder when the cache
is disabled) under a key that covers the sources, the flags and the compiler,
so reruns only run. A missing compiler or CUDA headers fail the tests; nothing
here is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from emulated import build_module

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
EMU_DIR = TESTS_DIR / "cuda_emu"
SELFTEST_DIR = EMU_DIR / "selftest"
DRIVER_SOURCE = SELFTEST_DIR / "main.cpp"


build = build_module()

SANITIZERS: tuple[str, ...] = build.SANITIZERS


@dataclass(frozen=True)
class Variant:
    """A driver build (by sanitizer) and the emulator mode it runs in."""

    sanitizer: str
    mode: str = "threads"  # AK_EMU_MODE

    def __str__(self) -> str:
        return self.sanitizer if self.mode == "threads" else f"{self.sanitizer}-{self.mode}"


PLAIN = Variant("none")
TSAN = Variant("tsan")
ASAN = Variant("asan")
FIBERS = Variant("none", "fibers")
# Sanitizer builds always use OS threads (fibers would confuse the sanitizers).
VARIANTS = (PLAIN, TSAN, ASAN, FIBERS)
VARIANT_IDS = [str(v) for v in VARIANTS]

CORRECT_COMMANDS = (
    "matmul",
    "reduce",
    "convert",
    "warp",
    "warp-partial",
    "atomics",
    "early-exit",
    "barrier-predicates",
    "mma",
    "mma-tf32",
    "tf32-round",
    "cp-async",
    "ldmatrix",
)
# Text any sanitizer prints when it reports something.
SANITIZER_MARKERS = (
    "ThreadSanitizer",
    "AddressSanitizer",
    "LeakSanitizer",
    "UndefinedBehaviorSanitizer",
    "runtime error:",
)
LAUNCH_ERROR_EXIT = 3  # the driver's exit status when AK_LAUNCH throws
BUILD_TIMEOUT_S = 600
RUN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (
            f"exit status {self.returncode} after {self.seconds:.1f} s\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-8000:]}"
        )


def _source_files() -> list[Path]:
    files = [
        *sorted(EMU_DIR.glob("*.h")),
        *sorted(SELFTEST_DIR.glob("*")),
        REPO_ROOT / "csrc" / "kernels" / "cuda_compat.h",
        EMU_DIR / "build.py",
    ]
    return [f for f in files if f.is_file()]


def _build_key(compiler: str, flags: Mapping[str, list[str]]) -> str:
    digest = hashlib.sha256()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    digest.update(version.encode())
    for name in sorted(flags):
        digest.update(f"{name}={' '.join(flags[name])}\n".encode())
    for path in _source_files():
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def _build_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("cuda_emu_selftest"))
    return tmp_path_factory.mktemp("cuda_emu_selftest")


@pytest.fixture(scope="session")
def drivers(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The driver built for each sanitizer; missing builds run in parallel."""
    try:
        compiler = build.compiler()
        flags = {s: [*build.compile_flags(s), *build.link_flags(s)] for s in SANITIZERS}
    except build.EmulatorToolchainError as error:
        pytest.fail(f"cannot build the CUDA emulator self-test: {error}", pytrace=False)
    key = _build_key(compiler, flags)
    out_dir = _build_dir(pytestconfig, tmp_path_factory)
    binaries = {s: out_dir / f"selftest-{s}-{key}" for s in SANITIZERS}

    jobs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for sanitizer, binary in binaries.items():
        if binary.is_file():
            continue
        partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
        command = [
            compiler,
            *flags[sanitizer],
            "-Wall",
            "-Wextra",
            "-Werror",
            str(DRIVER_SOURCE.relative_to(REPO_ROOT)),
            "-o",
            str(partial),
        ]
        jobs[sanitizer] = (
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,  # relative source paths keep messages readable
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
            partial,
        )
    failures = []
    for sanitizer, (process, partial) in jobs.items():
        output, _ = process.communicate(timeout=BUILD_TIMEOUT_S)
        if process.returncode != 0:
            failures.append(f"[{sanitizer}] {' '.join(map(str, process.args))}\n{output}")
            continue
        partial.replace(binaries[sanitizer])  # atomic: concurrent sessions never see half a file
        for stale in out_dir.glob(f"selftest-{sanitizer}-*"):
            if stale != binaries[sanitizer] and not stale.name.endswith(".tmp"):
                stale.unlink(missing_ok=True)
    if failures:
        pytest.fail("building the emulator self-test failed:\n" + "\n".join(failures))
    return binaries


def run_driver(
    drivers: Mapping[str, Path],
    variant: Variant,
    command: str,
    env: Mapping[str, str] | None = None,
    timeout: float = RUN_TIMEOUT_S,
) -> Run:
    full_env = dict(os.environ)
    full_env.update(build.sanitizer_env(variant.sanitizer))
    full_env["AK_EMU_MODE"] = variant.mode
    full_env.update(env or {})
    start = time.monotonic()
    try:
        done = subprocess.run(
            [*build.run_prefix(variant.sanitizer), str(drivers[variant.sanitizer]), command],
            cwd=REPO_ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"'{command}' ({variant}) did not finish within {timeout} s: {expired}")
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def assert_no_sanitizer_report(run: Run) -> None:
    found = [m for m in SANITIZER_MARKERS if m in run.stderr or m in run.stdout]
    assert not found, f"sanitizer report ({', '.join(found)}):\n{run.describe()}"


# --- correct kernels ------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("command", CORRECT_COMMANDS)
def test_correct_kernel(drivers: dict[str, Path], variant: Variant, command: str) -> None:
    """Exact results against a host reference, and no sanitizer report: the
    emulator's pool, barriers and warp exchanges are race-free and memory-safe."""
    run = run_driver(drivers, variant, command)
    assert run.returncode == 0, run.describe()
    assert run.stdout.startswith("PASS"), run.describe()
    assert_no_sanitizer_report(run)


def test_sanitizer_builds_ignore_fiber_mode(drivers: dict[str, Path]) -> None:
    """AK_EMU_MODE=fibers falls back to OS threads under ThreadSanitizer, with
    a note, instead of switching stacks behind the sanitizer's back."""
    run = run_driver(drivers, Variant("tsan", "fibers"), "matmul")
    assert run.returncode == 0, run.describe()
    assert "AK_EMU_MODE=fibers ignored in a sanitizer build" in run.stderr, run.describe()
    assert_no_sanitizer_report(run)


# --- broken kernels, each caught by its intended check -------------------------------


def test_missing_barrier_is_a_tsan_data_race(drivers: dict[str, Path]) -> None:
    """The matmul without its load barrier: ThreadSanitizer sees writes and
    reads of the shared tile with no happens-before edge between them."""
    run = run_driver(drivers, TSAN, "race")
    assert run.returncode != 0, run.describe()
    assert "WARNING: ThreadSanitizer: data race" in run.stderr, run.describe()
    assert "matmul_tiled<16, true>" in run.stderr, run.describe()


def test_missing_barrier_reads_poison_in_fiber_mode(drivers: dict[str, Path]) -> None:
    """Fibers run thread 0 first, so it reads tile entries nobody has written
    yet: the NaN poison makes the missing barrier fail deterministically."""
    run = run_driver(drivers, FIBERS, "race")
    assert run.returncode == 1, run.describe()
    mismatches = re.search(r"FAIL matmul \S+ \* \S+: (\d+) mismatches", run.stdout)
    assert mismatches and int(mismatches.group(1)) > 0, run.describe()


def test_misplaced_mma_fragment_gives_wrong_results(drivers: dict[str, Path]) -> None:
    """The emulated tensor-core step reads each lane's registers by the PTX
    fragment layout, so a kernel that swaps two A registers computes a wrong
    product instead of passing by accident."""
    run = run_driver(drivers, FIBERS, "mma-wrong-layout")
    assert run.returncode == 1, run.describe()
    mismatches = re.search(r"FAIL mma m16n8k16 \S+ \* \S+: (\d+) \(fp16\), (\d+) \(bf16\)",
                           run.stdout)
    assert mismatches, run.describe()
    assert int(mismatches.group(1)) > 0 and int(mismatches.group(2)) > 0, run.describe()


def test_misplaced_tf32_mma_fragment_gives_wrong_results(drivers: dict[str, Path]) -> None:
    """The same for the TF32 step (mma.m16n8k8): its own fragment layout is applied."""
    run = run_driver(drivers, FIBERS, "mma-tf32-wrong-layout")
    assert run.returncode == 1, run.describe()
    mismatches = re.search(r"FAIL mma m16n8k8 tf32 \S+ \* \S+: (\d+) mismatches", run.stdout)
    assert mismatches and int(mismatches.group(1)) > 0, run.describe()


@pytest.mark.parametrize("variant", (PLAIN, FIBERS), ids=str)
def test_cp_async_read_before_its_wait_shows_poison(drivers: dict[str, Path],
                                                    variant: Variant) -> None:
    """A cp.async destination holds the NaN poison until the wait that completes
    its group: the kernel that reads group 1 after waiting only for group 0 reads
    NaN for every thread, in either mode."""
    run = run_driver(drivers, variant, "cp-async-read-before-wait")
    assert run.returncode == 1, run.describe()
    found = re.search(r"FAIL cp\.async .*: (\d+) mismatches, (\d+) NaN", run.stdout)
    assert found and int(found.group(1)) == int(found.group(2)) == 64, run.describe()


@pytest.mark.parametrize(("command", "message"), [
    ("cp-async-unwaited", "returned with 1 cp.async copies not waited for"),
    ("cp-async-misaligned", "misaligned cp.async of 16 bytes"),
    ("cp-async-bad-size", "cp.async of 16 bytes with src-size 20 (must be 0..16)"),
    ("ldmatrix-misaligned", "is not a 16-byte aligned shared address"),
])
def test_cp_async_and_ldmatrix_misuse_is_a_launch_error(drivers: dict[str, Path], command: str,
                                                        message: str) -> None:
    run = run_driver(drivers, FIBERS, command)
    assert run.returncode == LAUNCH_ERROR_EXIT, run.describe()
    assert message in run.stderr, run.describe()


def test_cp_async_gives_threadsanitizer_no_ordering(drivers: dict[str, Path]) -> None:
    """Waiting for one's own copy orders nothing for the other threads: a read of a
    neighbour's copy without a barrier is a data race under ThreadSanitizer."""
    run = run_driver(drivers, TSAN, "cp-async-race")
    assert run.returncode != 0, run.describe()
    assert "WARNING: ThreadSanitizer: data race" in run.stderr, run.describe()
    assert "async_copy::race" in run.stderr, run.describe()


def test_misplaced_ldmatrix_rows_give_wrong_mma_results(drivers: dict[str, Path]) -> None:
    """ldmatrix hands each lane the fragment elements of the PTX layout, so lanes
    that give the wrong A rows make every element of the product wrong."""
    run = run_driver(drivers, FIBERS, "ldmatrix-wrong-rows")
    assert run.returncode == 1, run.describe()
    found = re.search(r"FAIL ldmatrix .*: (\d+) \(fp16\), (\d+) \(bf16\)", run.stdout)
    assert found and int(found.group(1)) > 0 and int(found.group(2)) > 0, run.describe()


def test_off_by_one_read_is_a_heap_buffer_overflow(drivers: dict[str, Path]) -> None:
    run = run_driver(drivers, ASAN, "overflow")
    assert run.returncode != 0, run.describe()
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in run.stderr, run.describe()
    assert "READ of size 4" in run.stderr, run.describe()
    assert "broken::shift_left" in run.stderr, run.describe()


def test_misaligned_float4_load_is_caught_by_ubsan(drivers: dict[str, Path]) -> None:
    run = run_driver(drivers, ASAN, "misaligned")
    assert run.returncode != 0, run.describe()
    assert "runtime error:" in run.stderr, run.describe()
    assert re.search(
        r"misaligned address 0x[0-9a-f]+ for type 'const (struct )?float4', "
        r"which requires 16 byte alignment",
        run.stderr,
    ), run.describe()


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_divergent_syncthreads_makes_the_launch_throw(
    drivers: dict[str, Path], variant: Variant
) -> None:
    run = run_driver(drivers, variant, "divergent")
    assert run.returncode == LAUNCH_ERROR_EXIT, run.describe()
    assert "AK_LAUNCH(broken::divergent_barrier)" in run.stderr, run.describe()
    assert "divergent barrier" in run.stderr, run.describe()
    # Both call sites are named.
    sites = set(re.findall(r"broken\.cuh:(\d+):\d+", run.stderr))
    assert len(sites) == 2, run.describe()
    assert_no_sanitizer_report(run)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_unwritten_shared_memory_reads_poison(drivers: dict[str, Path], variant: Variant) -> None:
    """Block 0 writes the shared arrays, block 1 only reads them: block 1 must
    see the NaN poison, for static and dynamic shared memory alike (a plain
    static array would hand it block 0's values)."""
    run = run_driver(drivers, variant, "unwritten-shared")
    assert run.returncode == 0, run.describe()
    assert "block 0: static NaN 0/32, dynamic NaN 0/32" in run.stdout, run.describe()
    assert "block 1: static NaN 32/32, dynamic NaN 32/32" in run.stdout, run.describe()
    assert_no_sanitizer_report(run)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        (PLAIN, ["31 thread(s) running, not at any barrier"]),
        # Fibers run one at a time: thread 1 spins, threads 2-31 never start.
        (FIBERS, ["1 thread(s) running, not at any barrier", "30 thread(s) not started yet"]),
    ],
    ids=["none", "none-fibers"],
)
def test_watchdog_aborts_a_spinning_block(
    drivers: dict[str, Path], variant: Variant, expected: list[str]
) -> None:
    """Thread 0 waits at a barrier for threads spinning on a flag it would set
    after the barrier. The watchdog must say who waits where, then abort."""
    timeout_s = 2.0
    run = run_driver(drivers, variant, "hang", env={"AK_EMU_TIMEOUT_S": str(timeout_s)}, timeout=60)
    assert run.returncode == -signal.SIGABRT, run.describe()
    assert "ak_emu watchdog: no emulated thread made progress" in run.stderr, run.describe()
    assert re.search(
        r"1 thread\(s\) waiting in __syncthreads at \S*broken\.cuh:\d+:\d+", run.stderr
    ), run.describe()
    for text in expected:
        assert text in run.stderr, run.describe()
    assert timeout_s <= run.seconds < timeout_s + 15, run.describe()


def test_watchdog_aborts_a_deadlock(drivers: dict[str, Path]) -> None:
    """Half a warp in __syncwarp, the other half in __syncthreads: nobody spins,
    everybody waits. OS threads: the watchdog reports both groups."""
    run = run_driver(drivers, PLAIN, "deadlock", env={"AK_EMU_TIMEOUT_S": "2"}, timeout=60)
    assert run.returncode == -signal.SIGABRT, run.describe()
    assert "ak_emu watchdog: no emulated thread made progress" in run.stderr, run.describe()
    assert "16 thread(s) waiting in __syncwarp" in run.stderr, run.describe()
    assert "16 thread(s) waiting in __syncthreads" in run.stderr, run.describe()


def test_fiber_scheduler_reports_a_deadlock_at_once(drivers: dict[str, Path]) -> None:
    """With fibers a round in which nobody can move is a certain deadlock: it is
    reported immediately, long before the (here 60 s) watchdog timeout."""
    run = run_driver(drivers, FIBERS, "deadlock", env={"AK_EMU_TIMEOUT_S": "60"}, timeout=30)
    assert run.returncode == -signal.SIGABRT, run.describe()
    assert "ak_emu: deadlock: every remaining thread waits" in run.stderr, run.describe()
    assert "16 thread(s) waiting in __syncwarp" in run.stderr, run.describe()
    assert "16 thread(s) waiting in __syncthreads" in run.stderr, run.describe()
    assert run.seconds < 10, run.describe()


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_oversized_block_is_rejected(drivers: dict[str, Path], variant: Variant) -> None:
    run = run_driver(drivers, variant, "bad-launch")
    assert run.returncode == LAUNCH_ERROR_EXIT, run.describe()
    assert "has 1056 threads; CUDA allows at most 1024" in run.stderr, run.describe()
    assert_no_sanitizer_report(run)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_partial_warp_mask_is_rejected(drivers: dict[str, Path], variant: Variant) -> None:
    run = run_driver(drivers, variant, "partial-mask")
    assert run.returncode == LAUNCH_ERROR_EXIT, run.describe()
    assert "mask 0x0000ffff is not the full warp" in run.stderr, run.describe()
    assert_no_sanitizer_report(run)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_shuffle_from_missing_lane_is_rejected(drivers: dict[str, Path], variant: Variant) -> None:
    """A 48-thread block: lanes 0-15 of its second warp shuffle down by 16 from
    lanes that do not exist."""
    run = run_driver(drivers, variant, "inactive-lane")
    assert run.returncode == LAUNCH_ERROR_EXIT, run.describe()
    assert re.search(
        r"__shfl_down_sync at \S+ by thread \(\d+,0,0\) of block \(0,0,0\) "
        r"reads lane (1[6-9]|2[0-9]|3[01]), which is not active",
        run.stderr,
    ), run.describe()
    assert_no_sanitizer_report(run)


def test_raw_shared_keyword_does_not_compile(tmp_path: Path) -> None:
    """__shared__ outside the AK_ macros would be one unpoisoned static for all
    blocks; the emulator turns it into a compile error naming the fix."""
    source = tmp_path / "raw_shared.cpp"
    source.write_text(
        '#include "cuda_compat.h"\n'
        "__global__ void k(float* out) {\n"
        "  __shared__ float tile[32];\n"
        "  tile[threadIdx.x] = 1.0f;\n"
        "  out[threadIdx.x] = tile[threadIdx.x];\n"
        "}\n"
    )
    done = subprocess.run(
        [build.compiler(), *build.compile_flags("none"), "-fsyntax-only", str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode != 0, done.stderr
    assert "AK_EMU_ERROR_use_AK_SHARED_ARRAY_or_AK_DYNAMIC_SHARED_not___shared__" in done.stderr


ALIGNMENT_PROBE = (
    '#include "cuda_compat.h"\n'
    "__global__ void k(int* out) {\n"
    "  AK_SHARED_ARRAY(char, before, [3]);\n"
    "  AK_SHARED_ARRAY(__half, tile, [6]);\n"
    "  static_assert(__alignof__(tile) >= 16, \"AK_SHARED_ARRAY is not 16-byte aligned\");\n"
    "  before[0] = 1;\n"
    "  out[0] = before[0] + static_cast<int>(sizeof(tile));\n"
    "}\n"
)


def _alignment_probe(tmp_path: Path) -> Path:
    source = tmp_path / "aligned_shared.cu"
    source.write_text("#include <cuda_fp16.h>\n" + ALIGNMENT_PROBE)
    return source


def test_shared_arrays_are_16_byte_aligned_in_the_emulator(tmp_path: Path) -> None:
    """Kernels move 4- to 16-byte words through half/bf16 shared arrays, so the macro
    must align them whatever the element type."""
    done = subprocess.run(
        [build.compiler(), *build.compile_flags("none"), "-x", "c++", "-fsyntax-only",
         str(_alignment_probe(tmp_path))],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr


def test_shared_arrays_are_16_byte_aligned_on_the_gpu(tmp_path: Path) -> None:
    """The same static check compiled by nvcc for sm_80 (the GPU build's macro)."""
    nvcc = build.find_cuda_include_dir().parent / "bin" / "nvcc"
    if not nvcc.is_file():
        pytest.skip(f"no nvcc beside the CUDA headers ({nvcc}): only the emulator's macro checked")
    done = subprocess.run(
        [str(nvcc), "-std=c++17", "-arch=sm_80", f"-I{REPO_ROOT / 'csrc' / 'kernels'}",
         "-c", str(_alignment_probe(tmp_path)), "-o", str(tmp_path / "aligned_shared.o")],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr


# --- efficiency counters (emu_counters.h, kernels in selftest/counters.cuh) ----------

# Per case, every counted site (in source order; compared in any order, as the
# column of a site on a shared line depends on the compiler): (space, op, requests, lane accesses,
# sectors, ideal sectors, wavefronts, ideal wavefronts, multiply-adds). Each number is
# derived by hand from the kernel's access pattern in the comment above it in
# selftest/counters.cuh.
_G, _S, _T = "global", "shared", "tensor"
COUNTER_SITES: dict[str, list[tuple[str, str, int, int, int, int, int, int, int]]] = {
    "coalesced": [(_G, "store", 2, 64, 8, 8, 0, 0, 0), (_G, "load", 2, 64, 8, 8, 0, 0, 0)],
    "strided": [(_G, "store", 1, 32, 4, 4, 0, 0, 0), (_G, "load", 1, 32, 32, 4, 0, 0, 0)],
    "broadcast": [(_G, "load", 1, 32, 1, 1, 0, 0, 0), (_S, "store", 1, 1, 0, 0, 1, 1, 0),
                  (_G, "store", 1, 32, 4, 4, 0, 0, 0), (_S, "load", 1, 32, 0, 0, 1, 1, 0)],
    "column-unpadded": [(_S, "store", 32, 1024, 0, 0, 32, 32, 0),
                        (_G, "store", 1, 32, 4, 4, 0, 0, 0), (_S, "load", 1, 32, 0, 0, 32, 1, 0)],
    "column-padded": [(_S, "store", 32, 1024, 0, 0, 32, 32, 0),
                      (_G, "store", 1, 32, 4, 4, 0, 0, 0), (_S, "load", 1, 32, 0, 0, 1, 1, 0)],
    "vectors": [(_G, "load", 1, 32, 16, 16, 0, 0, 0), (_S, "store", 1, 32, 0, 0, 4, 4, 0),
                (_S, "store", 1, 32, 0, 0, 4, 4, 0), (_S, "load", 1, 32, 0, 0, 8, 4, 0),
                (_S, "load", 1, 32, 0, 0, 2, 2, 0), (_G, "store", 1, 32, 16, 16, 0, 0, 0)],
    "divergent": [(_G, "load", 1, 16, 2, 2, 0, 0, 0), (_G, "load", 1, 16, 2, 2, 0, 0, 0),
                  (_G, "load", 3, 63, 12, 9, 0, 0, 0)],
    "mma-padded": [(_T, "mma", 4, 128, 0, 0, 0, 0, 4 * 2048)],
    "mma-tf32-padded": [(_T, "mma", 2, 64, 0, 0, 0, 0, 2 * 1024)],
    "sampled": [(_G, "store", 3, 96, 12, 12, 0, 0, 0), (_G, "load", 3, 96, 12, 12, 0, 0, 0)],
    "cp-async-zero-fill": [(_G, "load", 1, 32, 8, 8, 0, 0, 0), (_S, "store", 1, 32, 0, 0, 4, 4, 0)],
    "ldmatrix-unswizzled": [(_S, "load", 1, 32, 0, 0, 32, 4, 0)],
    "ldmatrix-swizzled": [(_S, "load", 1, 32, 0, 0, 4, 4, 0)],
}
# Per case: barriers, (global load, global store) DRAM bytes = per-block distinct
# sectors x 32 (see the kernels' comments; the divergent kernel's loads cover
# in[0..95], 12 sectors).
COUNTER_LAUNCH: dict[str, tuple[int, int, int]] = {
    "coalesced": (0, 256, 256), "strided": (0, 1024, 128), "broadcast": (1, 32, 128),
    "column-unpadded": (1, 0, 128), "column-padded": (1, 0, 128), "vectors": (1, 512, 512),
    "divergent": (0, 384, 0), "mma-padded": (0, 0, 0), "mma-tf32-padded": (0, 0, 0),
    "sampled": (0, 3 * 128, 3 * 128), "cp-async-zero-fill": (0, 256, 0),
    "ldmatrix-unswizzled": (0, 0, 0), "ldmatrix-swizzled": (0, 0, 0),
}
_SITE_FIELDS = ("space", "op", "requests", "lane_accesses", "sectors", "ideal_sectors",
                "wavefronts", "ideal_wavefronts", "mma_macs")


@pytest.fixture(scope="module")
def counter_runs(drivers: dict[str, Path]) -> dict[str, dict]:
    """The driver's 'counters' output in every variant (sanitizers check the counters'
    own code; fibers the grouping when lanes run in a fixed order)."""
    runs = {}
    for variant in VARIANTS:
        run = run_driver(drivers, variant, "counters")
        assert run.returncode == 0, run.describe()
        assert_no_sanitizer_report(run)
        runs[str(variant)] = json.loads(run.stdout)
    return runs


@pytest.mark.parametrize("variant", VARIANT_IDS)
@pytest.mark.parametrize("case", sorted(COUNTER_SITES))
def test_counters_report_the_derived_numbers(
    counter_runs: dict[str, dict], variant: str, case: str
) -> None:
    """Coalesced, strided, broadcast, bank-conflicting (32-way unpadded column, 1 with
    +1 padding), 8/16-byte, divergent, padded-MMA, zero-filling cp.async and ldmatrix
    (8-way conflicting rows, conflict-free XOR-swizzled ones) kernels: each site's requests,
    sectors, wavefronts and multiply-adds are exactly those derived by hand."""
    (launch,) = counter_runs[variant][case]["launches"]
    sites = [tuple(site[f] for f in _SITE_FIELDS) for site in launch["sites"]]
    assert sorted(sites) == sorted(COUNTER_SITES[case]), launch
    barriers, load_bytes, store_bytes = COUNTER_LAUNCH[case]
    assert (launch["barriers"], launch["load_dram_bytes"], launch["store_dram_bytes"]) == (
        barriers, load_bytes, store_bytes), launch


@pytest.mark.parametrize("variant", VARIANT_IDS)
def test_counters_sample_blocks_and_stop(counter_runs: dict[str, dict], variant: str) -> None:
    """10 blocks with 3 sampled run blocks 0, 5 and 9 only (the others leave their
    output untouched) and report scale 10/3; after counters_end() all blocks run."""
    out = counter_runs[variant]
    (launch,) = out["sampled"]["launches"]
    assert launch["blocks_total"] == 10 and launch["blocks_run"] == 3, launch
    assert launch["sampled_blocks"] == [0, 5, 9], launch
    assert launch["scale"] == pytest.approx(10 / 3, rel=1e-15), launch
    assert out["sampled-written-elements"] == 3 * 32
    assert out["unsampled-written-elements"] == 10 * 32
