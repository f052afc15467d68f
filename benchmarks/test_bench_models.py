"""End to end: AlexNet inference and training steps, images per second.

Providers, with the same weights and inputs: eager (the network built with
``backend="torch"``, i.e. PyTorch's own ops — the reference the tests use),
``torch.compile`` of that network, and ours (``backend="native"``; and
``"triton"`` on CUDA). A training step is forward, cross-entropy loss, backward
and an SGD step with momentum. Whole networks take about a second per step on a
small CPU, so these run few rounds (AK_BENCH_MODEL_ROUNDS, default 3, at most
AK_BENCH_ROUNDS); AK_BENCH_MODEL_BATCH (default 16) sets their batch. Device,
dtype and layout follow bench_utils' settings.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from bench_utils import CHANNELS_LAST, DEVICE, DTYPE, PROVIDERS, run, synchronized

from alexnet_kernels import bench
from alexnet_kernels.bench.cases import NETWORKS

BATCH = int(os.environ.get("AK_BENCH_MODEL_BATCH", "16"))
ROUNDS = int(os.environ.get("AK_BENCH_MODEL_ROUNDS", "3"))
INPUT_SIDE = {"alexnet": 224, "alexnet_paper": 227}


def _network(name: str, provider: str) -> torch.nn.Module:
    torch.manual_seed(0)
    backend = "torch" if provider in ("eager", "compile") else bench.our_backends(DEVICE)[provider]
    model = NETWORKS[name](backend=backend).to(device=DEVICE, dtype=DTYPE)
    if CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if provider == "compile" else model


def _inputs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    side = INPUT_SIDE[name]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, side, side, generator=generator)
    labels = torch.randint(0, 1000, (BATCH,), generator=generator)
    images = images.to(device=DEVICE, dtype=DTYPE)
    if CHANNELS_LAST:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(DEVICE)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", list(INPUT_SIDE))
def test_inference(benchmark, name: str, provider: str) -> None:
    model = _network(name, provider).eval()
    images, _ = _inputs(name)

    def infer() -> None:
        with torch.no_grad():
            model(images)

    run(benchmark, synchronized(infer), f"inference-{name}", rounds=ROUNDS, provider=provider,
        model_batch=BATCH, images_per_call=BATCH)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", list(INPUT_SIDE))
def test_training_step(benchmark, name: str, provider: str) -> None:
    model = _network(name, provider).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, labels = _inputs(name)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    run(benchmark, synchronized(step), f"training-step-{name}", rounds=ROUNDS,
        provider=provider, model_batch=BATCH, images_per_call=BATCH)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", list(INPUT_SIDE))
def test_training_step_bf16_autocast(benchmark, name: str, provider: str) -> None:
    """The training step of an fp32 network under ``torch.autocast`` to bfloat16 (our ops
    get bf16 activations from the autocast convolutions and stay in bf16)."""
    if DTYPE is not torch.float32:
        pytest.skip("autocast runs an fp32 network; AK_BENCH_DTYPE=fp32 only")
    model = _network(name, provider).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, labels = _inputs(name)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    run(benchmark, synchronized(step), f"training-step-bf16-autocast-{name}", rounds=ROUNDS,
        provider=provider, model_batch=BATCH, images_per_call=BATCH)
