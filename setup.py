"""Build script for the ``alexnet_kernels._C`` extension.

The CUDA sources are built whenever a CUDA toolkit is found on the build machine;
whether a GPU is present is irrelevant (build machines usually have none).

Environment knobs:
  ALEXNET_KERNELS_CPU_ONLY=1    build the CPU kernels only, even if nvcc is present
  ALEXNET_KERNELS_FORCE_CUDA=1  fail unless the CUDA kernels can be built
  CUDA_HOME                     the toolkit to use (else the standard install places)
  TORCH_CUDA_ARCH_LIST          GPU targets, e.g. "8.0;9.0" (default: Turing to Hopper)
  MAX_JOBS                      parallel compile jobs (further bounded by memory)
  DEBUG=1                       -O0 -g host code, -lineinfo device code
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEFAULT_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"
# nvcc on these headers peaks at about 1.5 GB; leave head-room for the linker.
MEMORY_PER_JOB_GB = 2.5


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in {"1", "true", "yes", "on"}


def _is_cuda_toolkit(folder: Path) -> bool:
    """A real toolkit has the compiler, the runtime headers and the runtime library."""
    has_lib = any((folder / lib / "libcudart.so").exists() for lib in ("lib64", "lib"))
    return (folder / "bin" / "nvcc").is_file() and (
        folder / "include" / "cuda_runtime.h"
    ).is_file() and has_lib


def find_cuda_home() -> Path | None:
    """Locate the CUDA toolkit without asking torch.

    ``nvcc`` on the PATH may be a wrapper script outside the toolkit, which makes
    torch's own guess (the wrapper's parent folder) wrong; so every candidate is
    checked for the files a build actually needs.
    """
    candidates: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    candidates.append(Path("/opt/cuda"))
    for folder in candidates:
        if _is_cuda_toolkit(folder):
            return folder.resolve()
    return None


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 8.0


def _bounded_jobs() -> int:
    requested = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
    by_memory = max(1, int(_memory_gb() // MEMORY_PER_JOB_GB))
    return max(1, min(requested, by_memory))


def _choose_build() -> tuple[bool, Path | None]:
    cpu_only = _env_flag("ALEXNET_KERNELS_CPU_ONLY")
    force_cuda = _env_flag("ALEXNET_KERNELS_FORCE_CUDA")
    if cpu_only and force_cuda:
        sys.exit("ALEXNET_KERNELS_CPU_ONLY and ALEXNET_KERNELS_FORCE_CUDA are both set; pick one.")
    if cpu_only:
        return False, None
    cuda_home = find_cuda_home()
    if cuda_home is None and force_cuda:
        sys.exit(
            "ALEXNET_KERNELS_FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the "
            "folder holding bin/nvcc, include/cuda_runtime.h and lib64/libcudart.so."
        )
    return cuda_home is not None, cuda_home


WITH_CUDA, CUDA_HOME = _choose_build()
DEBUG = _env_flag("DEBUG")
if CUDA_HOME is not None:
    # Must happen before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
    os.environ["CUDA_HOME"] = str(CUDA_HOME)
if WITH_CUDA:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
os.environ["MAX_JOBS"] = str(_bounded_jobs())

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _sources() -> list[str]:
    patterns = ["csrc/*.cpp", "csrc/cpu/*.cpp"] + (["csrc/cuda/*.cu"] if WITH_CUDA else [])
    return sorted(str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern))


def _extension():
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if WITH_CUDA else ""
    defines = [
        f'-DAK_BUILD_TORCH_VERSION="{torch.__version__}"',
        f'-DAK_BUILD_CUDA_ARCH_LIST="{arch_list}"',
    ] + (["-DAK_WITH_CUDA"] if WITH_CUDA else [])
    # -fno-math-errno lets GCC vectorise sqrt in the CPU kernels; the kernels pick
    # their instruction set at run time (csrc/cpu/vectorize.h), so no -march here.
    # -fopenmp: at::parallel_for is inline OpenMP in PyTorch's headers, so without
    # it the CPU kernels silently run on one thread. The OpenMP runtime it links
    # (libgomp.so.1) is the one torch has already loaded.
    openmp = ["-fopenmp"]
    cxx = (["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]) + openmp
    nvcc = ["-O0", "-lineinfo", "-g"] if DEBUG else ["-O3", "-lineinfo"]
    args = {
        "cxx": cxx + defines,
        "nvcc": nvcc + defines + ["--expt-relaxed-constexpr", "-Xptxas=-warn-spills"],
    }
    common = dict(
        name="alexnet_kernels._C",
        sources=_sources(),
        include_dirs=[str(CSRC), str(CSRC / "kernels")],
        extra_compile_args=args if WITH_CUDA else {"cxx": args["cxx"]},
        extra_link_args=openmp,
    )
    return CUDAExtension(**common) if WITH_CUDA else CppExtension(**common)


def _print_configuration() -> None:
    lines = [
        f"torch {torch.__version__} (built with CUDA {torch.version.cuda})",
        f"CUDA kernels: {'yes' if WITH_CUDA else 'no'}"
        + (f" (toolkit {CUDA_HOME})" if WITH_CUDA else ""),
        f"arch list: {os.environ.get('TORCH_CUDA_ARCH_LIST', '-') if WITH_CUDA else '-'}",
        f"jobs: {os.environ['MAX_JOBS']} (memory {_memory_gb():.0f} GB)",
        f"debug: {'yes' if DEBUG else 'no'}",
    ]
    print("alexnet-kernels build configuration:\n  " + "\n  ".join(lines), file=sys.stderr)


_print_configuration()

# Next to the library: the torch it was built against, readable (by
# alexnet_kernels._extension) even when a different torch makes the library fail to load.
TORCH_VERSION_FILE = "_C.torch_version"


class _BuildExtension(BuildExtension.with_options(use_ninja=True)):
    def _version_files(self) -> list[Path]:
        return [Path(self.get_ext_fullpath(ext.name)).parent / TORCH_VERSION_FILE
                for ext in self.extensions]

    def run(self) -> None:
        # After the build, where the library ended up (the source tree with --inplace).
        super().run()
        for path in self._version_files():
            path.write_text(torch.__version__ + "\n")

    def get_outputs(self) -> list[str]:
        return super().get_outputs() + [str(p) for p in self._version_files()]


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": _BuildExtension},
)
