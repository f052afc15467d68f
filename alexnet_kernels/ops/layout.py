"""Memory layouts the compiled kernels produce (shared by the fake kernels)."""

from __future__ import annotations

import torch


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last(_3d) when x is stored that way (and not also contiguous), else contiguous.

    The kernels work in NCHW or NHWC order and write their outputs in the order
    they worked in; any other strides are copied to contiguous first.
    """
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format
