"""Triton kernels are tested on a CUDA device when there is one, else on CPU
tensors in Triton's interpreter. The interpreter is chosen here, before any
op module of alexnet_kernels.triton is imported (Triton reads TRITON_INTERPRET
when a kernel is defined)."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
