"""alexnet-kernels: CPU, CUDA C++ and Triton kernels for AlexNet's layers as PyTorch ops.

Importing the package loads the compiled library when it is present; without it
only ``backend="torch"`` works and other backends raise a message saying how to
build it (see :func:`alexnet_kernels.assert_has_ops`).
"""

from alexnet_kernels import autotune, models, nn
from alexnet_kernels._extension import assert_loaded as assert_has_ops
from alexnet_kernels._extension import build_info, empty_cpu_cache
from alexnet_kernels.autotune import set_autotune
from alexnet_kernels.backends import BACKENDS, get_backend, set_backend, use_backend
from alexnet_kernels.convert import convert
from alexnet_kernels.export import export_onnx
from alexnet_kernels.ops import conv2d_relu, dropout, lrn, max_pool2d
from alexnet_kernels.summary import summary

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "assert_has_ops",
    "autotune",
    "build_info",
    "conv2d_relu",
    "convert",
    "dropout",
    "empty_cpu_cache",
    "export_onnx",
    "get_backend",
    "lrn",
    "max_pool2d",
    "models",
    "nn",
    "set_autotune",
    "set_backend",
    "summary",
    "use_backend",
]
