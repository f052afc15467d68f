"""What ``backend="auto"`` costs per call once its key is cached: ``backends.resolve`` as
each op's front end calls it, with autotuning on (a cached key: building the key and
one dictionary lookup) and off (the fixed choice), on small tensors of the benchmark
device. The difference is the autotuner's cost per call (README, *Choosing the
implementation*).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from bench_utils import DEVICE, machine_info

from alexnet_kernels import autotune, backends


def _call(op: str) -> tuple[tuple, dict]:
    """(resolve's positional arguments, its keyword arguments) for a small call of op."""
    module = importlib.import_module(f"alexnet_kernels.ops.{op.removesuffix('2d')}")
    x = torch.randn(2, 8, 9, 9, device=DEVICE, requires_grad=True)
    if op == "conv2d_relu":
        weight = torch.randn(8, 8, 3, 3, device=DEVICE, requires_grad=True)
        bias = torch.randn(8, device=DEVICE, requires_grad=True)
        keywords = {"native_devices": module._NATIVE_DEVICES, "tensors": (x, weight, bias),
                    "args": ((1, 1), (1, 1), (1, 1), 1)}
    else:
        arguments = {"lrn": (5, 1e-4, 0.75, 2.0), "dropout": (0.5, True),
                     "max_pool2d": ((3, 3), (2, 2), (0, 0), (1, 1), False, False)}[op]
        keywords = {"tensors": (x,), "args": arguments}
    return ("auto", x.device, op, module._IMPLEMENTED), keywords


@pytest.fixture
def restore_autotune():
    previous = autotune.enabled()
    yield
    autotune.set_autotune(previous)


@pytest.mark.parametrize("autotuning", ["off", "cached"])
@pytest.mark.parametrize("op", ["conv2d_relu", "lrn", "max_pool2d", "dropout"])
def test_resolve(benchmark, restore_autotune, op: str, autotuning: str) -> None:
    positional, keywords = _call(op)
    autotune.set_autotune(autotuning == "cached")
    chosen = backends.resolve(*positional, **keywords)  # measures once: the key is cached
    benchmark.group = f"autotune-lookup-{op}"
    benchmark.extra_info.update(machine_info(), autotuning=autotuning, chosen=chosen)
    assert benchmark(backends.resolve, *positional, **keywords) == chosen
