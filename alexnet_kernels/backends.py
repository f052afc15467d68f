"""Choosing which implementation runs an op.

Every op takes ``backend=``:

* ``"auto"``: the process-wide default if one was set with :func:`set_backend` or
  :func:`use_backend`, else the compiled kernel for the tensor's device when the
  library has one, else the PyTorch reference;
* ``"native"``: the compiled C++ (CPU) or CUDA C++ kernel; an error if it is missing;
* ``"triton"``: the Triton kernel;
* ``"torch"``: the pure-PyTorch reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

from alexnet_kernels import _extension

BACKENDS = ("auto", "native", "triton", "torch")

_default_backend = "auto"


def _validate(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Set the backend that ``backend="auto"`` resolves to in this process."""
    global _default_backend
    _default_backend = _validate(name)


def get_backend() -> str:
    """The process-wide default backend (``"auto"`` unless changed)."""
    return _default_backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: ``with use_backend("torch"): ...`` sets the default inside the block."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def resolve(backend: str, device: torch.device, op: str, implemented: Iterable[str],
            native_devices: Iterable[str] | None = None) -> str:
    """The concrete backend ("native", "triton" or "torch") that runs ``op`` on ``device``.

    ``implemented`` lists the concrete backends that exist for the op;
    ``native_devices`` the device types its compiled kernels cover (default: all
    the library was built for).
    """
    requested = _validate(backend)
    if requested == "auto":
        requested = _default_backend
    implemented = frozenset(implemented)
    native = _extension.native_device_types()
    if native_devices is not None:
        native = native & frozenset(native_devices)
    if requested == "auto":
        if "native" in implemented and device.type in native:
            return "native"
        return "torch"
    if requested not in implemented:
        raise NotImplementedError(
            f"{op}: backend={requested!r} is not implemented yet; available: "
            f"{sorted(implemented)} (or 'auto')"
        )
    if requested == "triton":
        from alexnet_kernels import triton as triton_kernels

        triton_kernels.check_usable(op, device)
    if requested == "native":
        _extension.assert_loaded()
        if native_devices is not None and device.type not in native_devices:
            raise NotImplementedError(
                f"{op}: backend='native' has no {device.type} kernel yet; use backend='torch'")
        if device.type not in native:
            raise RuntimeError(
                f"{op}: backend='native' has no kernel for {device.type} tensors in this build "
                f"(built for {sorted(_extension.native_device_types())}); rebuild with a CUDA "
                "toolkit present for CUDA kernels, or use backend='torch'"
            )
    return requested
