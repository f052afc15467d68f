"""Training-mode checks of the models: dropout-exact gradients against PyTorch's
network, and a short real training run on an offline dataset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cases.models import check_train_step_matches_pytorch
from helpers import require_native_cpu

from alexnet_kernels import models
from alexnet_kernels.data import digits_32x32


@pytest.mark.parametrize("variant", ["alexnet", "paper-grouped"])
def test_train_mode_matches_pytorch_with_the_same_dropout_masks(variant: str) -> None:
    require_native_cpu()
    check_train_step_matches_pytorch(variant, "native")


def test_cifar_network_learns_digits() -> None:
    """Three epochs of Adam on real data: loss falls and held-out accuracy is far above
    chance (10%; about 50% measured), so the whole backward path of the network trains."""
    require_native_cpu()
    torch.manual_seed(0)
    images, labels = digits_32x32()
    order = torch.randperm(len(labels))
    train, held_out = order[:1500], order[1500:]
    model = models.alexnet_cifar(10, backend="native")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epoch_losses = []
    for _ in range(3):
        model.train()
        total = 0.0
        for batch in train[torch.randperm(len(train))].split(50):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        epoch_losses.append(total / len(train))
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[held_out]).argmax(1) == labels[held_out]).float().mean().item()
    assert epoch_losses[2] < epoch_losses[1] < epoch_losses[0], epoch_losses
    assert epoch_losses[-1] < 0.8 * epoch_losses[0], epoch_losses
    assert accuracy > 0.35, (accuracy, epoch_losses)
