"""AlexNet with backend="triton" end to end: every convolution, LRN, pooling and dropout
on the Triton kernels (the linear layers stay PyTorch's), against the same network on
PyTorch's ops. Runs in Triton's interpreter on machines without a GPU."""

from __future__ import annotations

import pytest
import torch
from cases.models import check_backend_matches_torch, check_train_step_matches_pytorch
from helpers import TRITON_DEVICE

from alexnet_kernels import models


@pytest.fixture(autouse=True)
def _full_fp32():
    """Both networks in full fp32 on a GPU (the interpreter has no TF32 anyway)."""
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        yield


def test_every_layer_of_the_triton_network_is_ours() -> None:
    model = models.alexnet_paper(10, groups=2, backend="triton")
    assert model.backend == "triton"
    ours = [m for m in model.modules()
            if m is not model and getattr(m, "backend", None) == "triton"]
    # 5 convolutions, 2 LRNs, 3 pools, 2 dropouts.
    assert len(ours) == 12


def test_cifar_network_matches_pytorch() -> None:
    """Eval outputs, and loss and gradients of a train-mode step without dropout."""
    check_backend_matches_torch("cifar", "triton", TRITON_DEVICE)


def test_cifar_training_step_with_dropout_matches_pytorch() -> None:
    """With dropout: PyTorch's network replays the Triton dropout masks."""
    check_train_step_matches_pytorch("cifar", "triton", TRITON_DEVICE)
