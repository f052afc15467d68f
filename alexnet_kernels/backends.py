"""Choosing which implementation runs an op.

Every op takes ``backend=``:

* ``"auto"``: the process-wide default if one was set with :func:`set_backend` or
  :func:`use_backend`, else the fastest implementation measured for the call's
  shapes on this machine (``alexnet_kernels.autotune``, when the op passes its
  tensors); with autotuning off, the compiled kernel for the tensor's device when
  the library has one, else the PyTorch reference (the "fixed choice");
* ``"native"``: the compiled C++ (CPU) or CUDA C++ kernel; an error if it is missing;
* ``"triton"``: the Triton kernel;
* ``"torch"``: the pure-PyTorch reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch

from alexnet_kernels import _extension, autotune

BACKENDS = ("auto", "native", "triton", "torch")

_default_backend = "auto"
# (device, implemented, native_devices) -> the fixed choice; reading device.type is slow.
_fixed_choices: dict[tuple, str] = {}


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


def _native_types(native_devices: Iterable[str] | None) -> frozenset[str]:
    """Device types with a compiled kernel for an op whose kernels cover ``native_devices``
    (None: all the library was built for)."""
    native = _extension.native_device_types()
    return native if native_devices is None else native & frozenset(native_devices)


def _fixed_choice(device: torch.device, implemented: Iterable[str],
                  native_devices: Iterable[str] | None) -> str:
    """``"auto"`` without autotuning: the compiled kernel where it exists, else torch."""
    key = (device, implemented, native_devices)
    fixed = _fixed_choices.get(key)
    if fixed is None:
        native = "native" in implemented and device.type in _native_types(native_devices)
        fixed = _fixed_choices[key] = "native" if native else "torch"
    return fixed


def usable(device_type: str, implemented: Iterable[str],
           native_devices: Iterable[str] | None = None) -> tuple[str, ...]:
    """The concrete backends of an op (``implemented``) that can run on ``device_type``
    tensors here: the compiled kernel where it exists, Triton on CUDA tensors when
    triton is installed, the PyTorch reference always."""
    implemented = frozenset(implemented)
    found = []
    if "native" in implemented and device_type in _native_types(native_devices):
        found.append("native")
    if "triton" in implemented and device_type == "cuda":
        from alexnet_kernels.triton import triton_installed

        if triton_installed():
            found.append("triton")
    if "torch" in implemented:
        found.append("torch")
    return tuple(found)


def resolve(backend: str, device: torch.device, op: str, implemented: Iterable[str],
            native_devices: Iterable[str] | None = None, *,
            tensors: Sequence[torch.Tensor | None] | None = None, args: tuple = ()) -> str:
    """The concrete backend ("native", "triton" or "torch") that runs ``op`` on ``device``.

    ``implemented`` lists the concrete backends that exist for the op;
    ``native_devices`` the device types its compiled kernels cover (default: all
    the library was built for). ``tensors`` (the call's tensor arguments, None for an
    absent optional one) and ``args`` (its other arguments, hashable constants;
    ``implemented`` and ``native_devices`` must then be tuples) let
    ``"auto"`` pick by measurement (``alexnet_kernels.autotune``); without them, or
    with autotuning off, ``"auto"`` is the fixed choice.
    """
    requested = _validate(backend)
    if requested == "auto":
        requested = _default_backend
    if requested == "auto":
        fixed = _fixed_choice(device, implemented, native_devices)
        if tensors is None or not autotune.enabled():
            return fixed
        return autotune.choose(op, device, fixed, implemented, native_devices,
                               autotune.call_key(op, tensors, args))
    implemented = frozenset(implemented)
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
        if device.type not in _extension.native_device_types():
            raise RuntimeError(
                f"{op}: backend='native' has no kernel for {device.type} tensors in this build "
                f"(built for {sorted(_extension.native_device_types())}); rebuild with a CUDA "
                "toolkit present for CUDA kernels, or use backend='torch'"
            )
    return requested
