"""Public functional API: one module per op."""

from alexnet_kernels.ops.lrn import lrn

__all__ = ["lrn"]
