"""End to end on the CPU: AlexNet inference and training steps, images per second.

Providers, with the same weights and inputs: eager (the network built with
``backend="torch"``, i.e. PyTorch's own ops — the reference the tests use),
``torch.compile`` of that network, and ours (``backend="native"``). A training
step is forward, cross-entropy loss, backward and an SGD step with momentum.
Whole networks take about a second per step on a small CPU, so these run few
rounds; AK_BENCH_MODEL_BATCH (default 16) sets their batch.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from bench_utils import run

from alexnet_kernels import models

BATCH = int(os.environ.get("AK_BENCH_MODEL_BATCH", "16"))
ROUNDS = 3
# Network constructor and input side.
NETWORKS = {
    "alexnet": (models.alexnet, 224),
    "alexnet_paper": (models.alexnet_paper, 227),
}
PROVIDERS = ("eager", "compile", "ours")


def _network(name: str, provider: str) -> torch.nn.Module:
    build, _ = NETWORKS[name]
    torch.manual_seed(0)
    model = build(backend="native" if provider == "ours" else "torch")
    return torch.compile(model) if provider == "compile" else model


def _inputs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    side = NETWORKS[name][1]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, side, side, generator=generator)
    labels = torch.randint(0, 1000, (BATCH,), generator=generator)
    return images, labels


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_inference(benchmark, name: str, provider: str) -> None:
    model = _network(name, provider).eval()
    images, _ = _inputs(name)

    def infer() -> None:
        with torch.no_grad():
            model(images)

    run(benchmark, infer, f"inference-{name}", rounds=ROUNDS, dtype="float32", batch=BATCH,
        images_per_call=BATCH)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_training_step(benchmark, name: str, provider: str) -> None:
    model = _network(name, provider).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, labels = _inputs(name)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    run(benchmark, step, f"training-step-{name}", rounds=ROUNDS, dtype="float32", batch=BATCH,
        images_per_call=BATCH)
