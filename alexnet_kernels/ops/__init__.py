"""Public functional API: one module per op."""

from alexnet_kernels.ops.conv2d_relu import conv2d_relu
from alexnet_kernels.ops.dropout import dropout
from alexnet_kernels.ops.lrn import lrn
from alexnet_kernels.ops.max_pool import max_pool2d

__all__ = ["conv2d_relu", "dropout", "lrn", "max_pool2d"]
