"""LRN at AlexNet's shapes on the CPU: ours vs PyTorch eager vs torch.compile, side by side."""

from __future__ import annotations

import pytest
import torch
from bench_utils import BATCH, run

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
    x = torch.randn(BATCH, *SHAPES[layer])
    fn = PROVIDERS[provider]

    def forward() -> None:
        with torch.no_grad():
            fn(x)

    run(benchmark, forward, f"lrn-forward-{layer}", dtype="float32", batch=BATCH)


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("layer", list(SHAPES))
def test_lrn_forward_backward(benchmark, layer: str, provider: str) -> None:
    x = torch.randn(BATCH, *SHAPES[layer], requires_grad=True)
    grad = torch.randn(BATCH, *SHAPES[layer])
    fn = PROVIDERS[provider]

    def forward_backward() -> None:
        fn(x).backward(grad)
        x.grad = None

    run(benchmark, forward_backward, f"lrn-forward-backward-{layer}", dtype="float32",
        batch=BATCH)
