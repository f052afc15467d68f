"""``torch.nn`` modules backed by the library's ops, drop-in replacements for PyTorch's."""

from __future__ import annotations

import torch

from alexnet_kernels.ops.conv2d_relu import conv2d_relu
from alexnet_kernels.ops.dropout import dropout
from alexnet_kernels.ops.lrn import lrn
from alexnet_kernels.ops.max_pool import max_pool2d


class _ShowsBackend:
    """Adds ``backend=...`` to the module's repr when it is not the default."""

    backend: str

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return base if self.backend == "auto" else f"{base}, backend={self.backend!r}"


class LocalResponseNorm(_ShowsBackend, torch.nn.LocalResponseNorm):
    """``torch.nn.LocalResponseNorm`` (same constructor, attributes and repr) on our kernels.

    Input (N, C, *), output of the same shape. ``backend`` is keyword-only and
    chooses the implementation (see ``alexnet_kernels.backends``).
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                 *, backend: str = "auto") -> None:
        super().__init__(size, alpha=alpha, beta=beta, k=k)
        self.backend = backend

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return lrn(input, self.size, self.alpha, self.beta, self.k, backend=self.backend)



class MaxPool2d(_ShowsBackend, torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` (same constructor, attributes and repr) on our kernels.

    Input (N, C, H, W) or (C, H, W). ``backend`` is keyword-only and chooses the
    implementation (see ``alexnet_kernels.backends``).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False, *,
                 backend: str = "auto") -> None:
        super().__init__(kernel_size, stride, padding, dilation, return_indices=return_indices,
                         ceil_mode=ceil_mode)
        self.backend = backend

    def forward(self, input: torch.Tensor):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices,
                          backend=self.backend)


class Dropout(_ShowsBackend, torch.nn.Dropout):
    """``torch.nn.Dropout`` (same constructor, attributes and repr) on our kernels.

    Active in training mode only; the mask comes from the default generator of
    the input's device (see ``alexnet_kernels.ops.dropout``). ``backend`` is
    keyword-only and chooses the implementation.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, backend: str = "auto") -> None:
        super().__init__(p, inplace)
        self.backend = backend

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout(input, self.p, self.training, self.inplace, backend=self.backend)


class Conv2dReLU(_ShowsBackend, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` followed by ReLU, as one fused op.

    Same constructor, parameters and ``state_dict`` keys as ``torch.nn.Conv2d``
    (weights load unchanged); ``backend`` is keyword-only.
    """

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.backend = backend

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            # Like nn.Conv2d: pad with the mode first, then convolve without padding.
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice,
                                            mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return conv2d_relu(input, self.weight, self.bias, self.stride, padding, self.dilation,
                           self.groups, backend=self.backend)
