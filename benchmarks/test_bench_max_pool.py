"""Max pooling (3x3, stride 2) at AlexNet's shapes on the CPU: ours vs eager vs torch.compile."""

from __future__ import annotations

import pytest
import torch
from bench_utils import time_forward, time_forward_backward

import alexnet_kernels as ak
from alexnet_kernels import reference

# Inputs of AlexNet's three pools (paper widths): 55 -> 27, 27 -> 13, 13 -> 6.
SHAPES = {"pool1": (96, 55, 55), "pool2": (256, 27, 27), "pool5": (256, 13, 13)}
PROVIDERS = {
    "eager": lambda x: reference.max_pool2d(x, 3, 2),
    "compile": torch.compile(lambda x: reference.max_pool2d(x, 3, 2)),
    "ours": lambda x: ak.max_pool2d(x, 3, 2),
}


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("layer", list(SHAPES))
def test_max_pool_forward(benchmark, layer: str, provider: str) -> None:
    time_forward(benchmark, PROVIDERS[provider], SHAPES[layer], f"max_pool-forward-{layer}")


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("layer", list(SHAPES))
def test_max_pool_forward_backward(benchmark, layer: str, provider: str) -> None:
    time_forward_backward(benchmark, PROVIDERS[provider], SHAPES[layer],
                          f"max_pool-forward-backward-{layer}")
