"""LRN at AlexNet's shapes on the CPU: ours vs PyTorch eager vs torch.compile, side by side."""

from __future__ import annotations

import pytest
import torch
from bench_utils import time_forward, time_forward_backward

import alexnet_kernels as ak
from alexnet_kernels import reference

SHAPES = {"paper-conv1": (96, 55, 55), "paper-conv2": (256, 27, 27)}
PARAMS = (5, 1e-4, 0.75, 2.0)
PROVIDERS = {
    "eager": lambda x: reference.lrn(x, *PARAMS),
    "compile": torch.compile(lambda x: reference.lrn(x, *PARAMS)),
    "ours": lambda x: ak.lrn(x, *PARAMS),
}


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("layer", list(SHAPES))
def test_lrn_forward(benchmark, layer: str, provider: str) -> None:
    time_forward(benchmark, PROVIDERS[provider], SHAPES[layer], f"lrn-forward-{layer}")


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("layer", list(SHAPES))
def test_lrn_forward_backward(benchmark, layer: str, provider: str) -> None:
    time_forward_backward(benchmark, PROVIDERS[provider], SHAPES[layer],
                          f"lrn-forward-backward-{layer}")
