"""Fused conv2d + bias + ReLU per AlexNet layer: ours vs eager vs torch.compile.

Eager is ``F.relu(F.conv2d(...))`` (the reference the tests use); the backward
computes the gradients of the input, the weight and the bias. The layers take
hundreds of milliseconds at batch 32 on a small CPU, so they run 5 rounds.
"""

from bench_utils import op_benchmarks

test_conv2d_relu_forward, test_conv2d_relu_forward_backward = op_benchmarks("conv2d_relu", rounds=5)
