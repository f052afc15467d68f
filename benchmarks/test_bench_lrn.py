"""LRN(5, 1e-4, 0.75, 2) at AlexNet's shapes: ours vs PyTorch eager vs torch.compile."""

from bench_utils import op_benchmarks

test_lrn_forward, test_lrn_forward_backward = op_benchmarks("lrn")
