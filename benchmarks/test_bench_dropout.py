"""Dropout on the CPU: ours vs PyTorch eager vs torch.compile, side by side.

Shapes: AlexNet's classifier (batch x 9216 and batch x 4096, p = 0.5) and the
reference activation shape batch x 96 x 55 x 55.
"""

from __future__ import annotations

import pytest
import torch
from bench_utils import time_forward, time_forward_backward

import alexnet_kernels as ak
from alexnet_kernels import reference

SHAPES = {"fc6-input": (9216,), "fc7-input": (4096,), "conv1": (96, 55, 55)}
P = 0.5
PROVIDERS = {
    "eager": lambda x: reference.dropout(x, P),
    "compile": torch.compile(lambda x: reference.dropout(x, P)),
    "ours": lambda x: ak.dropout(x, P),
}


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("layer", list(SHAPES))
def test_dropout_forward(benchmark, layer: str, provider: str) -> None:
    time_forward(benchmark, PROVIDERS[provider], SHAPES[layer], f"dropout-forward-{layer}", p=P)


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("layer", list(SHAPES))
def test_dropout_forward_backward(benchmark, layer: str, provider: str) -> None:
    time_forward_backward(benchmark, PROVIDERS[provider], SHAPES[layer],
                          f"dropout-forward-backward-{layer}", p=P)
