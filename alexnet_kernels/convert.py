"""Swapping a model's PyTorch layers for the library's, keeping its weights and keys."""

from __future__ import annotations

import itertools

from torch import nn

from alexnet_kernels.nn import Conv2dReLU, Dropout, LocalResponseNorm, MaxPool2d


def _fused(conv: nn.Conv2d, backend: str) -> Conv2dReLU:
    """A Conv2dReLU holding `conv`'s own Parameter objects (no copy)."""
    # Built on the meta device so no throw-away weights are allocated.
    fused = Conv2dReLU(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                       conv.padding_mode, device="meta", backend=backend)
    fused.weight = conv.weight
    fused.bias = conv.bias
    fused.train(conv.training)
    return fused


def _replacement(module: nn.Module, backend: str) -> nn.Module | None:
    """Our module with `module`'s hyper-parameters, or None when we have no equivalent."""
    kind = type(module)
    if kind is nn.LocalResponseNorm:
        new = LocalResponseNorm(module.size, module.alpha, module.beta, module.k, backend=backend)
    elif kind is nn.MaxPool2d:
        new = MaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation,
                        module.return_indices, module.ceil_mode, backend=backend)
    elif kind is nn.Dropout:
        new = Dropout(module.p, module.inplace, backend=backend)
    else:
        return None
    new.train(module.training)
    return new


def _fuse_sequential(seq: nn.Sequential, backend: str) -> None:
    """Fuses each Conv2d directly followed by a ReLU, in place; indices do not move."""
    names = list(seq._modules)
    for name, next_name in itertools.pairwise(names):
        conv, relu = seq._modules[name], seq._modules[next_name]
        if type(conv) is nn.Conv2d and type(relu) is nn.ReLU:
            seq._modules[name] = _fused(conv, backend)
            seq._modules[next_name] = nn.Identity()


def convert(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Replaces, in place, the layers of `model` the library implements; returns `model`.

    What is converted (exact types only: subclasses may change ``forward``, so
    they are left alone):

    * inside every ``nn.Sequential`` (at any depth), an ``nn.Conv2d`` whose next
      entry is an ``nn.ReLU`` becomes :class:`~alexnet_kernels.nn.Conv2dReLU`
      holding the *same* Parameter objects, and the ReLU's entry becomes
      ``nn.Identity()``; so indices, ``state_dict`` keys and optimiser state
      referring to the parameters are unchanged. A Conv2d followed by anything
      else (a BatchNorm, say) stays as it is;
    * every ``nn.LocalResponseNorm``, ``nn.MaxPool2d`` and ``nn.Dropout``
      (anywhere, Sequential or attribute) becomes the library's module with the
      same hyper-parameters and training flag.

    Everything else, including functional calls in ``forward``, stays PyTorch's.
    Hooks registered on replaced modules are not carried over. Every new module
    runs on ``backend``.
    """
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            _fuse_sequential(module, backend)
        for name, child in list(module._modules.items()):
            if child is not None and (new := _replacement(child, backend)) is not None:
                module._modules[name] = new
    return model
