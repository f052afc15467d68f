"""Max pooling (3x3, stride 2) at AlexNet's shapes: ours vs eager vs torch.compile."""

from bench_utils import op_benchmarks

test_max_pool_forward, test_max_pool_forward_backward = op_benchmarks("max_pool2d")
