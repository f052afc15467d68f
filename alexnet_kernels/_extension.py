"""Loading of the compiled operator library ``alexnet_kernels._C``.

The library is optional at import time: without it the pure-PyTorch reference
backend still works, and asking for a compiled kernel raises one actionable
message (what is missing and how to build it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch

_BUILD_HINT = (
    "Build it from the project's root with `pip install --no-build-isolation -e .` "
    "(torch must already be installed; set ALEXNET_KERNELS_CPU_ONLY=1 for a CPU-only build)."
)


# Written next to the library by setup.py: the torch version it was built against.
_TORCH_VERSION_FILE = Path(__file__).with_name("_C.torch_version")


def built_torch_version() -> str | None:
    """The torch version the library was built against, as the build recorded it (also
    when the library cannot be loaded); None when no build recorded it."""
    try:
        return _TORCH_VERSION_FILE.read_text().strip() or None
    except OSError:
        return None


def _version_mismatch(built: str) -> str:
    """Names both torch versions and the two fixes."""
    release = built.split("+")[0]
    return (f"alexnet_kernels._C was built against torch {built} but torch {torch.__version__} "
            f"is running: install the torch it was built for (`pip install torch=={release}`, "
            f"from the same index for a +variant) or rebuild the library against this torch. "
            f"{_BUILD_HINT}")


def _load() -> tuple[ModuleType | None, str | None]:
    try:
        library = importlib.import_module("alexnet_kernels._C")
    except ImportError as error:
        reason = str(error)
        built = built_torch_version()
        if "undefined symbol" in reason:
            if built is not None and built != torch.__version__:
                return None, f"{_version_mismatch(built)} (loading failed with: {reason})"
            reason += " (the library was most likely built against another version of torch)"
        return None, f"alexnet_kernels._C could not be loaded: {reason}. {_BUILD_HINT}"
    if library.torch_version != torch.__version__:
        return None, _version_mismatch(library.torch_version)
    return library, None


_LIBRARY, _LOAD_ERROR = _load()
# The instruction set the CPU kernels run with (see cpu_capability).
_cpu_capability: str | None = None


def is_loaded() -> bool:
    """Whether the compiled kernels are available in this process."""
    return _LIBRARY is not None


def load_error() -> str | None:
    """Why the compiled kernels are unavailable, or None when they are loaded."""
    return _LOAD_ERROR


def assert_loaded() -> None:
    """Raise a RuntimeError saying how to build the library when it is not loaded."""
    if _LOAD_ERROR is not None:
        raise RuntimeError(_LOAD_ERROR)


def with_cuda() -> bool:
    """Whether the loaded library contains the CUDA kernels."""
    return _LIBRARY is not None and bool(_LIBRARY.with_cuda)


def native_device_types() -> frozenset[str]:
    """Device types the compiled library has kernels for."""
    if _LIBRARY is None:
        return frozenset()
    return frozenset({"cpu", "cuda"} if _LIBRARY.with_cuda else {"cpu"})


def cpu_capability() -> str:
    """Instruction set the CPU kernels run with: "avx512", "avx2" or "default".

    The widest one the CPU supports unless lowered with
    ``ALEXNET_KERNELS_CPU_CAPABILITY`` or :func:`set_cpu_capability`.
    """
    global _cpu_capability
    if _cpu_capability is None:  # asked at every autotuned call: kept, not re-read
        assert_loaded()
        _cpu_capability = _LIBRARY.cpu_capability()
    return _cpu_capability


def detected_cpu_capability() -> str:
    """The widest instruction set of this CPU that the CPU kernels have a variant for."""
    assert_loaded()
    return _LIBRARY.detected_cpu_capability()


def set_cpu_capability(name: str) -> None:
    """Run the CPU kernels with instruction set ``name`` ("avx512", "avx2" or "default").

    For testing and comparing the variants; ValueError when the CPU lacks it.
    """
    global _cpu_capability
    assert_loaded()
    _LIBRARY.set_cpu_capability(name)
    _cpu_capability = _LIBRARY.cpu_capability()


def onednn_fusion() -> str:
    """How the CPU conv2d_relu applies its ReLU: "fused" (oneDNN's post-op, used when the
    operands cannot produce a NaN), "disabled", or "unavailable: <why>"."""
    assert_loaded()
    reason = _LIBRARY.onednn_fusion_unavailable_reason()
    if reason:
        return f"unavailable: {reason}"
    return "fused" if _LIBRARY.onednn_fusion_enabled() else "disabled"


def set_onednn_fusion(enabled: bool) -> None:
    """Allow (the default) or forbid oneDNN's fused ReLU in the CPU conv2d_relu; forbidden,
    the convolution runs unfused and the ReLU in place (for tests and comparisons)."""
    assert_loaded()
    _LIBRARY.set_onednn_fusion_enabled(bool(enabled))


def empty_cpu_cache() -> int:
    """Free the large CPU output blocks (16 MiB and more) that the CPU kernels keep for
    the next output of the same size (up to ``ALEXNET_KERNELS_CPU_BLOCK_CACHE_MB``,
    default 512); returns the bytes freed. The CPU analogue of
    ``torch.cuda.empty_cache()``: tensors in use are not affected."""
    assert_loaded()
    return _LIBRARY.release_cached_cpu_blocks()


def build_info() -> dict[str, object]:
    """How the loaded library was built (for bug reports)."""
    if _LIBRARY is None:
        return {"loaded": False, "error": _LOAD_ERROR}
    return {
        "loaded": True,
        "torch_version": _LIBRARY.torch_version,
        "with_cuda": bool(_LIBRARY.with_cuda),
        "cuda_arch_list": _LIBRARY.cuda_arch_list,
        "cpu_capability": _LIBRARY.cpu_capability(),
        "onednn_fusion": onednn_fusion(),
    }
