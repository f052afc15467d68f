"""Where a test provider runs: the device, the ``backend=`` it passes, the context it needs.

Providers of the ops' front ends (``ak.lrn(..., backend=...)`` and the others):

* ``native``, ``native_avx2``, ``native_baseline``: the compiled CPU kernels with
  the widest instruction set this CPU has, AVX2, and the portable baseline;
* ``triton``: the Triton kernels (CUDA tensors, else CPU tensors in Triton's
  interpreter, see ``TRITON_DEVICE``);
* ``native_cuda``: the compiled CUDA kernels (skipped without a CUDA device).

``emulated_cuda`` (the CUDA kernels run on the CPU by tests/cuda_emu) has no
front end: tests call its ops, ``torch.ops.alexnet_kernels_emu.*``, directly.
"""

from __future__ import annotations

import contextlib
import dataclasses

from conftest import TRITON_DEVICE, native_cpu_context, require_native_cuda

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
    return Placement("cpu", "native", native_cpu_context(provider))


def emulated_ops():
    """``torch.ops.alexnet_kernels_emu``, built and loaded on first use."""
    import emulated

    return emulated.load()
