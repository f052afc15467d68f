"""Fused conv2d + bias + ReLU per AlexNet layer on the CPU: ours vs eager vs torch.compile.

Eager is ``F.relu(F.conv2d(...))`` (the reference the tests use). The layers
take hundreds of milliseconds at batch 32 on a small CPU, so they run fewer
rounds than the other ops.
"""

from __future__ import annotations

import pytest
import torch
from bench_utils import time_forward, time_forward_backward

import alexnet_kernels as ak
from alexnet_kernels import reference

# input (C, H, W), weight (Cout, Cin / groups, KH, KW), stride, padding, groups
LAYERS = {
    "torchvision-conv1": ((3, 224, 224), (64, 3, 11, 11), 4, 2, 1),
    "torchvision-conv2": ((64, 27, 27), (192, 64, 5, 5), 1, 2, 1),
    "torchvision-conv3": ((192, 13, 13), (384, 192, 3, 3), 1, 1, 1),
    "torchvision-conv4": ((384, 13, 13), (256, 384, 3, 3), 1, 1, 1),
    "torchvision-conv5": ((256, 13, 13), (256, 256, 3, 3), 1, 1, 1),
    "paper-conv2-grouped": ((96, 27, 27), (256, 48, 5, 5), 1, 2, 2),
}
ROUNDS = 5
PROVIDERS = ("eager", "compile", "ours")


def _layer_fn(layer: str, provider: str):
    _, w_shape, stride, padding, groups = LAYERS[layer]
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(w_shape, generator=generator).requires_grad_()
    bias = torch.randn(w_shape[0], generator=generator).requires_grad_()

    def eager(x):
        return reference.conv2d_relu(x, weight, bias, stride, padding, 1, groups)

    def ours(x):
        return ak.conv2d_relu(x, weight, bias, stride, padding, 1, groups)

    return {"eager": eager, "compile": torch.compile(eager), "ours": ours}[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_conv2d_relu_forward(benchmark, layer: str, provider: str) -> None:
    time_forward(benchmark, _layer_fn(layer, provider), LAYERS[layer][0],
                 f"conv2d_relu-forward-{layer}", rounds=ROUNDS)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_conv2d_relu_forward_backward(benchmark, layer: str, provider: str) -> None:
    time_forward_backward(benchmark, _layer_fn(layer, provider), LAYERS[layer][0],
                          f"conv2d_relu-forward-backward-{layer}", rounds=ROUNDS)
