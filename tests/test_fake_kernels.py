"""The fake (meta) kernels refuse what the real kernels refuse, with the same message,
so that a call traced by torch.compile or torch.export fails where the eager call would
(and not later, on real tensors). Each case is a raw-op call the C++ kernel rejects."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import require_native_cpu
from torch._subclasses.fake_tensor import FakeTensorMode

import alexnet_kernels  # noqa: F401  (registers the ops and their fake kernels)

ops = torch.ops.alexnet_kernels


def _seed() -> torch.Tensor:
    return torch.tensor([5, 0], dtype=torch.int64)


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape).to(dtype)


# (id, make the arguments, call, the message both must give)
CASES: list[tuple[str, Callable[[], tuple], Callable, str]] = [
    ("lrn-2d", lambda: (_x(4, 5), 3, 1e-4, 0.75, 1.0), ops.lrn,
     r"lrn: x must have at least 3 dimensions \(N, C, \*\), got 2 dimensions"),
    ("lrn-int", lambda: (torch.ones(2, 3, 4, dtype=torch.int32), 3, 1e-4, 0.75, 1.0), ops.lrn,
     "lrn: x must be float64, float32, float16 or bfloat16, got"),
    ("lrn-size-0", lambda: (_x(2, 3, 4), 0, 1e-4, 0.75, 1.0), ops.lrn,
     "lrn: size must be >= 1, got 0"),
    ("lrn-size-2^31", lambda: (_x(2, 3, 4), 2**31, 1e-4, 0.75, 1.0), ops.lrn,
     "lrn: size must fit in 32 bits"),
    ("lrn-alpha-inf", lambda: (_x(2, 3, 4), 3, float("inf"), 0.75, 1.0), ops.lrn,
     "lrn: alpha must be finite, got inf"),
    ("lrn-k-nan", lambda: (_x(2, 3, 4), 3, 1e-4, 0.75, float("nan")), ops.lrn,
     "lrn: k must be finite, got nan"),
    ("lrn_backward-shapes", lambda: (_x(2, 3, 5), _x(2, 3, 4), _x(2, 3, 4), 3, 1e-4, 0.75, 1.0),
     ops.lrn_backward, "lrn_backward: grad_y, x and y must have the same shape"),
    ("lrn_backward-dtypes",
     lambda: (_x(2, 3, 4, dtype=torch.float64), _x(2, 3, 4), _x(2, 3, 4), 3, 1e-4, 0.75, 1.0),
     ops.lrn_backward, "lrn_backward: grad_y, x and y must have the same dtype"),
    ("dropout-p-0", lambda: (_x(8), _seed(), 0.0), ops.dropout,
     r"dropout: the kernel needs 0 < p < 1 .* got p = 0"),
    ("dropout-p-1", lambda: (_x(8), _seed(), 1.0), ops.dropout,
     r"dropout: the kernel needs 0 < p < 1 .* got p = 1"),
    ("dropout-int", lambda: (torch.ones(8, dtype=torch.int32), _seed(), 0.5), ops.dropout,
     "dropout: x must be float64, float32, float16 or bfloat16, got"),
    ("dropout-seed-int32", lambda: (_x(8), torch.zeros(2, dtype=torch.int32), 0.5), ops.dropout,
     "dropout: seed_offset must be an int64 tensor, got"),
    ("dropout-seed-shape", lambda: (_x(8), torch.zeros(3, dtype=torch.int64), 0.5), ops.dropout,
     r"dropout: seed_offset must have shape \(2,\) holding \(seed, offset\), got shape \[3\]"),
]


@pytest.mark.parametrize(("make", "op", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_fake_kernel_refuses_what_the_kernel_refuses(make: Callable[[], tuple], op: Callable,
                                                     message: str) -> None:
    require_native_cpu()
    with pytest.raises(RuntimeError, match=message):
        op(*make())
    with FakeTensorMode() as mode:
        fake = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in make())
        with pytest.raises(RuntimeError, match=message):
            op(*fake)
