// The gradient through a ReLU, given its output: F.relu's backward.
#pragma once

#include <ATen/core/Tensor.h>

namespace alexnet_kernels::cpu {

// grad_y where y > 0 or y is NaN, else 0: at::threshold_backward(grad_y, y, 0),
// bit for bit (so a NaN output lets its gradient through, as in F.relu), in
// one vectorised pass into an output allocated like the kernels' outputs
// (csrc/cpu/allocation.h). grad_y and y have the same sizes and dtype.
at::Tensor relu_backward(const at::Tensor& grad_y, const at::Tensor& y);

}  // namespace alexnet_kernels::cpu
