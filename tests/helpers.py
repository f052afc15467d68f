"""What the tests share: the tolerance check, seeded inputs, and where each test
provider runs.

Providers of the ops' front ends (``ak.lrn(..., backend=...)`` and the others):

* ``native``, ``native_avx2``, ``native_baseline``: the compiled CPU kernels with
  the widest instruction set this CPU has, AVX2, and the portable baseline;
* ``triton``: the Triton kernels (CUDA tensors, else CPU tensors in Triton's
  interpreter, see ``TRITON_DEVICE``);
* ``native_cuda``: the compiled CUDA kernels (skipped without a CUDA device);
* ``torch``: PyTorch's own ops behind our front ends (``backend="torch"``), CPU.

``emulated_cuda`` (the CUDA kernels run on the CPU by tests/cuda_emu) has no
front end: tests call its ops, ``torch.ops.alexnet_kernels_emu.*``
(``emulated_ops()``), directly.

``tests`` is on ``sys.path`` under pytest (``pythonpath`` in pyproject.toml), so
test files import this module as ``helpers``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest
import torch

from alexnet_kernels.reference import TOLERANCES

FLOAT_DTYPES = list(TOLERANCES)
# The dtypes the Triton kernels support (no float64: GPUs have little of it).
TRITON_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Where the Triton tests (tests/triton) run: the GPU, else CPU tensors in
# Triton's interpreter (conftest.py sets TRITON_INTERPRET to match, before any
# module of alexnet_kernels.triton is imported).
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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


# The providers every op's kernel tests run on: the CPU kernels' three instruction
# sets, the CUDA kernels in the emulator, and on a real GPU (Triton has tests/triton).
KERNEL_PROVIDERS = ["native", "native_avx2", "native_baseline", "emulated_cuda", "native_cuda"]
FRONT_END_PROVIDERS = ("native", "native_avx2", "native_baseline", "triton", "native_cuda")


@dataclasses.dataclass(frozen=True)
class Placement:
    device: str
    backend: str
    context: contextlib.AbstractContextManager


def placement(provider: str) -> Placement:
    """The placement of a front-end provider; skips when this machine cannot run it."""
    if provider == "triton":
        return Placement(TRITON_DEVICE, "triton", contextlib.nullcontext())
    if provider == "native_cuda":
        require_native_cuda()
        return Placement("cuda", "native", contextlib.nullcontext())
    if provider == "torch":
        require_native_cpu()  # the front ends' op registrations live in the library
        return Placement("cpu", "torch", contextlib.nullcontext())
    return Placement("cpu", "native", native_cpu_context(provider))


def emulated_ops():
    """``torch.ops.alexnet_kernels_emu``, built and loaded on first use."""
    import emulated

    return emulated.load()
