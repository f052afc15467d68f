"""Dropout (p = 0.5) on AlexNet's conv1 output and classifier inputs: ours vs eager vs
torch.compile."""

from bench_utils import op_benchmarks

test_dropout_forward, test_dropout_forward_backward = op_benchmarks("dropout")
