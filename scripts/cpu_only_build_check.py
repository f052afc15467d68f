"""Builds the CPU-only library (what `pip install` makes where no CUDA toolkit is
found) and runs the op and model tests against it.

The test suite otherwise runs against whatever the main build is; on a machine
with nvcc that is the CUDA build, so the CPU-only build -- the one most users
without a toolkit get -- would never be compiled or loaded. This compiles it
into a temporary folder (ALEXNET_KERNELS_CPU_ONLY=1), puts a copy of the
package with that library first on PYTHONPATH, checks that it is the one
loaded and that it has no CUDA kernels, and runs the tests of every op, of the
models and of the autotuner (the CUDA-emulation tests, which do not use the
library, are left out). Exit status: pytest's, or 1 when the build or the load check fails.

    python scripts/cpu_only_build_check.py [extra pytest arguments]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ["test_lrn.py", "test_max_pool.py", "test_dropout.py", "test_conv2d_relu.py",
              "test_models.py", "test_autotune.py"]
# Asserted in the child process: the library loaded is the CPU-only one just built.
LOAD_CHECK = """
import sys
from pathlib import Path
import alexnet_kernels
from alexnet_kernels import _extension
expected = Path(sys.argv[1]).resolve()
loaded = Path(alexnet_kernels.__file__).resolve().parent.parent
assert loaded == expected, f"alexnet_kernels was imported from {loaded}, not {expected}"
assert _extension.is_loaded(), _extension.load_error()
assert not _extension.with_cuda(), "the CPU-only library reports CUDA kernels"
print(f"CPU-only library loaded from {loaded}")
"""


def build(work: Path) -> Path:
    """Compiles the CPU-only extension under `work`; returns the folder holding the package."""
    env = dict(os.environ, ALEXNET_KERNELS_CPU_ONLY="1")
    env.pop("ALEXNET_KERNELS_FORCE_CUDA", None)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib",
                    str(work / "lib"), "--build-temp", str(work / "temp")],
                   cwd=ROOT, env=env, check=True)
    site = work / "site"
    shutil.copytree(ROOT / "alexnet_kernels", site / "alexnet_kernels",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    for library in (work / "lib" / "alexnet_kernels").glob("_C*"):
        shutil.copy2(library, site / "alexnet_kernels" / library.name)
    return site


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="ak-cpu-only-") as folder:
        work = Path(folder)
        try:
            site = build(work)
        except subprocess.CalledProcessError as error:
            print(f"CPU-only build failed: {error}", file=sys.stderr)
            return 1
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(site)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        # Run from the temporary folder so the checkout's own package is not on sys.path.
        loaded = subprocess.run([sys.executable, "-c", LOAD_CHECK, str(site)], cwd=work,
                                env=env)
        if loaded.returncode != 0:
            return 1
        tests = [str(ROOT / "tests" / name) for name in TEST_FILES]
        return subprocess.run([sys.executable, "-m", "pytest", *tests, "-q",
                               "-p", "no:cacheprovider", "-k", "not emulated", *argv],
                              cwd=work, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
