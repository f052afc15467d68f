"""Whole networks' cases and shared test bodies: the network tolerance, and the same
weights on one backend's kernels against PyTorch's ops (eval, and a train-mode step
with PyTorch's dropout replaying our masks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import random_tensor
from torch import nn

import alexnet_kernels as ak
from alexnet_kernels import models

# Whole networks sum thousands of products per output: looser than one op's fp32 tolerance.
NET_RTOL, NET_ATOL = 1e-4, 1e-5


def assert_net_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = NET_RTOL,
                     atol: float = NET_ATOL, scale: float | None = None) -> None:
    """Absolute tolerance scaled by `scale`, by default the reference's largest magnitude."""
    if scale is None:
        scale = max(expected.abs().max().item(), 1e-30)
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol * scale)


# (constructor without dropout, input shape) for the same-weights backend comparison.
VARIANTS = {
    "paper": (lambda **kw: models.alexnet_paper(groups=1, dropout=0.0, **kw), (1, 3, 227, 227)),
    "paper-grouped": (lambda **kw: models.alexnet_paper(groups=2, dropout=0.0, **kw),
                      (1, 3, 227, 227)),
    "paper-no-lrn": (lambda **kw: models.alexnet_paper(lrn=False, dropout=0.0, **kw),
                     (1, 3, 227, 227)),
    "cifar": (lambda **kw: models.alexnet_cifar(10, dropout=0.0, **kw), (4, 3, 32, 32)),
    "bn": (lambda **kw: models.alexnet_bn(5, dropout=0.0, **kw), (2, 3, 195, 195)),
}


def check_backend_matches_torch(variant: str, backend: str, device: str = "cpu") -> None:
    """Same weights on `backend`'s kernels and on PyTorch's (a VARIANTS network on `device`):
    eval outputs, and train-mode loss and parameter gradients."""
    build, shape = VARIANTS[variant]
    torch.manual_seed(1)
    ours = build(backend=backend).to(device)
    reference = build(backend="torch").to(device)
    reference.load_state_dict(ours.state_dict(), strict=True)
    x = random_tensor(shape, torch.float32, seed=2).to(device)

    ours.eval(), reference.eval()
    with torch.no_grad():
        assert_net_close(ours(x), reference(x))

    ours.train(), reference.train()
    target = (torch.arange(shape[0]) % 3).to(device)
    losses = []
    for model in (ours, reference):
        model.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=NET_RTOL, atol=NET_ATOL)
    # One scale for all gradients: a conv bias before BatchNorm has a gradient
    # that is zero up to rounding, which no per-tensor relative test can match.
    scale = max(q.grad.abs().max().item() for q in reference.parameters())
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None, name
        assert_net_close(p.grad, q.grad, scale=scale)


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
