"""Builds the CPU-only wheel, smoke-tests it installed away from the source tree, and
runs the op and model tests against it.

The test suite otherwise runs against whatever the main build is; on a machine with
nvcc that is the CUDA build, so the CPU-only build -- the one users without a toolkit
get -- would never be compiled or loaded. Here it is, once, as the wheel:

1. copies the project's files (git's tracked and untracked-but-not-ignored ones)
   to a temporary folder, so no build output of the checkout ends up in the wheel;
2. ``ALEXNET_KERNELS_CPU_ONLY=1 pip wheel --no-build-isolation --no-deps .`` there;
3. checks what the wheel holds (the library and the torch version it was built
   against; no C++/CUDA sources) and prints its size;
4. ``pip install --no-deps --target SITE`` the wheel; SITE then has the package
   but not torch, which comes from this interpreter's environment;
5. runs the smoke test in a fresh interpreter with ``-s -P``, ``PYTHONPATH=SITE``,
   an empty folder as cwd and a PATH without any compiler: it asserts that the
   package and its library are SITE's (not the checkout's, which an editable
   install maps the package to) and that no path of the source tree is on
   ``sys.path``, then runs every op forward and backward against the PyTorch
   reference and a model forward + backward; then ``python -m
   alexnet_kernels.env_report`` the same way;
6. runs the tests of every op, of the models and of the autotuner with SITE first
   on ``PYTHONPATH`` (the CUDA-emulation tests, which do not use the library, are
   left out), after checking in the same environment that SITE's CPU-only library
   is the one imported.

    python scripts/wheel_check.py [--keep DIR] [--no-tests] [-- extra pytest arguments]

Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ["test_lrn.py", "test_max_pool.py", "test_dropout.py", "test_conv2d_relu.py",
              "test_models.py", "test_autotune.py"]
# Asserted where the tests run (argv[1]: SITE): the library imported is SITE's CPU-only one
# and not the checkout's, which an editable install maps the package to.
LOAD_CHECK = """
import sys
from pathlib import Path
import alexnet_kernels
from alexnet_kernels import _extension
site = Path(sys.argv[1]).resolve()
loaded = Path(alexnet_kernels.__file__).resolve().parent.parent
assert loaded == site, f"alexnet_kernels was imported from {loaded}, not {site}"
assert _extension.is_loaded(), _extension.load_error()
assert not _extension.with_cuda(), "the CPU-only library reports CUDA kernels"
print(f"CPU-only library loaded from {loaded}")
"""
# Checked in the installed copy (argv[1]: SITE, argv[2]: the source tree).
SMOKE = r"""
import sys
from pathlib import Path

site, source = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
# The interpreter's own environment may live inside the checkout (make's .venv): its
# site-packages is not the source tree.
prefix = Path(sys.prefix).resolve()
on_path = [p for p in sys.path if p and Path(p).resolve().is_relative_to(source)
           and not Path(p).resolve().is_relative_to(prefix)]
assert not on_path, f"source tree paths on sys.path: {on_path}"

import torch
import torch.nn.functional as F

import alexnet_kernels as ak
from alexnet_kernels import _extension, models

package = Path(ak.__file__).resolve()
library = Path(_extension._LIBRARY.__file__).resolve() if _extension.is_loaded() else None
assert package.is_relative_to(site), f"alexnet_kernels imported from {package}, not {site}"
assert _extension.is_loaded(), _extension.load_error()
assert library.is_relative_to(site), f"library loaded from {library}"
assert not _extension.with_cuda(), "the CPU-only wheel reports CUDA kernels"
assert _extension.built_torch_version() == torch.__version__, _extension.built_torch_version()

g = torch.Generator().manual_seed(0)
def rand(*shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

def check(name, ours, reference, *tensors):
    # Forward and gradient of a random projection, float64, native against torch.
    y, y_ref = ours(*tensors), reference(*tensors)
    torch.testing.assert_close(y, y_ref)
    weights = torch.randn(y.shape, generator=g, dtype=y.dtype)
    grads = torch.autograd.grad((y * weights).sum(), tensors)
    grads_ref = torch.autograd.grad((y_ref * weights).sum(), tensors)
    for grad, expected in zip(grads, grads_ref):
        torch.testing.assert_close(grad, expected)
    print(f"{name}: forward and backward match PyTorch")

x, w, b = rand(2, 6, 9, 11), rand(4, 3, 3, 2), rand(4)
check("conv2d_relu", lambda x, w, b: ak.conv2d_relu(x, w, b, 2, 1, 1, 2, backend="native"),
      lambda x, w, b: F.relu(F.conv2d(x, w, b, 2, 1, 1, 2)), x, w, b)
check("lrn", lambda x: ak.lrn(x, 5, 1e-2, 0.75, 2.0, backend="native"),
      lambda x: F.local_response_norm(x, 5, 1e-2, 0.75, 2.0), x)
check("max_pool2d", lambda x: ak.max_pool2d(x, 3, 2, 1, ceil_mode=True, backend="native"),
      lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), x)
with torch.no_grad():  # the inference (values-only) max pool
    torch.testing.assert_close(ak.max_pool2d(x, 3, 2, backend="native"), F.max_pool2d(x, 3, 2))
# Dropout: the mask is ours (not PyTorch's stream), so check its law instead:
# kept elements scaled by 1 / (1 - p), the gradient through the same mask.
xd = rand(64, 1000)
y = ak.dropout(xd, 0.4, training=True, backend="native")
kept = y != 0
torch.testing.assert_close(y[kept], xd[kept] / 0.6)
assert abs(kept.double().mean().item() - 0.6) < 0.01, kept.double().mean().item()
(grad,) = torch.autograd.grad(y.sum(), xd)
torch.testing.assert_close(grad, kept.double() / 0.6)
print("dropout: keeps 1 - p, scales, and its gradient uses the same mask")

torch.manual_seed(0)
model = models.alexnet_cifar(10, backend="native")
reference = models.alexnet_cifar(10, backend="torch")
reference.load_state_dict(model.state_dict())
images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
for m in (model, reference):
    m.eval()
    F.cross_entropy(m(images), labels).backward()
for (name, p), q in zip(model.named_parameters(), reference.parameters()):
    scale = q.grad.abs().max().item()
    torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
print("alexnet_cifar: forward and backward match the torch backend")
print(f"smoke test passed: alexnet_kernels from {package.parent}")
"""


def project_files(root: Path) -> list[Path]:
    """The files a clean checkout has (plus new ones not yet committed)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    return [Path(name) for name in listed.split("\0") if name and (root / name).is_file()]


def build_wheel(work: Path) -> Path:
    """Builds the CPU-only wheel from a copy of the project; returns the wheel."""
    source = work / "source"
    for name in project_files(ROOT):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    env = dict(os.environ, ALEXNET_KERNELS_CPU_ONLY="1")
    env.pop("ALEXNET_KERNELS_FORCE_CUDA", None)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation",
                    "--no-deps", ".", "-w", str(work / "dist")], cwd=source, env=env, check=True)
    (wheel,) = (work / "dist").glob("alexnet_kernels-*.whl")
    return wheel


def check_contents(wheel: Path) -> None:
    """The wheel has the library and its torch version, and no C++/CUDA sources."""
    names = zipfile.ZipFile(wheel).namelist()
    libraries = [n for n in names if n.startswith("alexnet_kernels/_C") and n.endswith(".so")]
    sources = [n for n in names if n.endswith((".cpp", ".cu", ".cuh", ".h"))]
    if len(libraries) != 1 or "alexnet_kernels/_C.torch_version" not in names or sources:
        raise SystemExit(f"unexpected wheel contents: libraries {libraries}, sources {sources}, "
                         f"torch version file: {'alexnet_kernels/_C.torch_version' in names}")
    size = wheel.stat().st_size / 2**20
    print(f"wheel {wheel.name}: {size:.1f} MiB, {len(names)} files, library {libraries[0]}")


def smoke_env(site: Path, work: Path) -> dict[str, str]:
    """The environment of the smoke test: only SITE on PYTHONPATH, no compiler on PATH."""
    empty_bin = work / "bin"
    empty_bin.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "CUDA_HOME", "CC",
                                                               "CXX", "PYTHONSAFEPATH"}}
    env.update(PYTHONPATH=str(site), PATH=str(empty_bin), PYTHONNOUSERSITE="1")
    return env


def run_step(name: str, command: list[str], **kwargs) -> None:
    start = time.perf_counter()
    subprocess.run(command, check=True, **kwargs)
    print(f"[{name}: {time.perf_counter() - start:.1f} s]")


def run_tests(site: Path, cwd: Path, pytest_args: list[str]) -> None:
    """Step 6: the op, model and autotuner tests against the installed wheel."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    run_step("load check", [sys.executable, "-c", LOAD_CHECK, str(site)], cwd=cwd, env=env)
    tests = [str(ROOT / "tests" / name) for name in TEST_FILES]
    run_step("tests", [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider",
                       "-k", "not emulated", *pytest_args], cwd=cwd, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--no-tests", action="store_true", help="stop after step 5")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest in step 6 (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ak-wheel-") as folder:
        work = args.keep or Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            wheel = build_wheel(work)
            print(f"[build: {time.perf_counter() - start:.1f} s]")
            check_contents(wheel)
            site, cwd = work / "site", work / "run"
            cwd.mkdir(exist_ok=True)
            run_step("install", [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                 "--target", str(site), str(wheel)])
            env = smoke_env(site, work)
            run_step("smoke test", [sys.executable, "-s", "-P", "-c", SMOKE, str(site),
                                    str(ROOT)], cwd=cwd, env=env)
            run_step("env_report", [sys.executable, "-s", "-P", "-m",
                                    "alexnet_kernels.env_report"], cwd=cwd, env=env)
            if not args.no_tests:
                run_tests(site, cwd, args.pytest_args)
        except subprocess.CalledProcessError as error:
            print(f"wheel check failed: {error}", file=sys.stderr)
            return 1
        print(f"wheel check passed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
