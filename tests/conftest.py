"""Shared fixtures: tolerance table, seeded generators and the kernel providers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (rtol, atol) for comparing a kernel's output in `dtype` with the float64
# reference computed from the same (already rounded) inputs. Half types are
# loaded into fp32 registers, so their error is the final rounding plus the
# rounding of y/grad_y when those are inputs.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}

FLOAT_DTYPES = list(TOLERANCES)


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


def pytest_report_header(config: pytest.Config) -> list[str]:
    import alexnet_kernels

    return [f"alexnet_kernels build: {alexnet_kernels.build_info()}",
            f"cuda available: {torch.cuda.is_available()}"]
