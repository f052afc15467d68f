"""Public functional API: one module per op."""

from alexnet_kernels.ops.dropout import dropout
from alexnet_kernels.ops.lrn import lrn

__all__ = ["dropout", "lrn"]
