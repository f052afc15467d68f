"""Training-mode checks of the models: dropout-exact gradients against PyTorch's
network, and a short real training run on an offline dataset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_tensor, require_native_cpu
from test_models import assert_net_close
from torch import nn

import alexnet_kernels as ak
from alexnet_kernels import models
from alexnet_kernels.data import digits_32x32


class ReplayedDropout(nn.Module):
    """Dropout that applies a recorded keep mask: y = x * mask / (1 - p)."""

    def __init__(self, mask: torch.Tensor, p: float) -> None:
        super().__init__()
        self.mask, self.p = mask, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask / (1 - self.p)


def _dropout_modules(model: nn.Module) -> list[tuple[nn.Module, str, ak.nn.Dropout]]:
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, ak.nn.Dropout)]


# (constructor, input shape) of the networks trained with dropout against PyTorch's.
TRAIN_VARIANTS = {
    "alexnet": (lambda **kw: models.alexnet(10, **kw), (2, 3, 63, 63)),
    "paper-grouped": (lambda **kw: models.alexnet_paper(10, groups=2, **kw), (2, 3, 227, 227)),
    "cifar": (lambda **kw: models.alexnet_cifar(10, **kw), (2, 3, 32, 32)),
}


def check_train_step_matches_pytorch(variant: str, backend: str, device: str = "cpu") -> None:
    """Loss and every parameter gradient of a TRAIN_VARIANTS network on `backend`'s kernels
    equal those of the same network on PyTorch's ops, when PyTorch's dropout replays our
    masks."""
    build, shape = TRAIN_VARIANTS[variant]
    torch.manual_seed(3)
    ours = build(backend=backend).train().to(device)
    reference = build(backend="torch").train().to(device)
    reference.load_state_dict(ours.state_dict(), strict=True)
    x = random_tensor(shape, torch.float32, seed=4).to(device)
    target = torch.tensor([1, 7], device=device)

    # Where dropout's input is 0 (after ReLU) the recorded mask reads 0; the ReLU
    # before it passes no gradient there, so the gradients do not depend on it.
    masks, inputs_nonzero = [], []

    def record(module, args, y) -> None:
        masks.append(y != 0)
        inputs_nonzero.append(args[0] != 0)

    hooks = [module.register_forward_hook(record) for _, _, module in _dropout_modules(ours)]
    loss_ours = F.cross_entropy(ours(x), target)
    loss_ours.backward()
    for hook in hooks:
        hook.remove()
    for (parent, name, module), mask in zip(_dropout_modules(reference), masks, strict=True):
        setattr(parent, name, ReplayedDropout(mask, module.p))
    loss_reference = F.cross_entropy(reference(x), target)
    loss_reference.backward()

    kept = torch.cat([(m & nz).flatten() for m, nz in zip(masks, inputs_nonzero, strict=True)])
    candidates = torch.cat([nz.flatten() for nz in inputs_nonzero])
    assert 0.4 < kept.sum() / candidates.sum() < 0.6  # p = 0.5 where it is observable
    torch.testing.assert_close(loss_ours, loss_reference, rtol=1e-4, atol=1e-5)
    scale = max(q.grad.abs().max().item() for q in reference.parameters())
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None, name
        assert_net_close(p.grad, q.grad, scale=scale)


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
