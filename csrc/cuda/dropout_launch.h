// Host glue of the CUDA dropout kernel that does not depend on a CUDA device:
// layout, output allocation, seed and offset, dtype dispatch. Shared by the
// CUDA launcher (csrc/cuda/dropout.cu), which adds the device guard, the
// current stream and the launch check, and by the tests that run the same
// kernel on the CPU.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include "dropout.h"
#include "kernel_types.h"
#include "kernels/dropout.cuh"

namespace alexnet_kernels {

// `after_launch()` runs right after the kernel launch (the launch check on a GPU).
template <typename AfterLaunch>
at::Tensor run_dropout(const at::Tensor& x_in, const at::Tensor& seed_offset, double p,
                       cudaStream_t stream, const AfterLaunch& after_launch) {
  check_dropout_arguments(x_in, seed_offset, p);
  at::Tensor y = dropout_output(x_in);
  const at::Tensor x = dropout_input_like(x_in, y);
  if (y.numel() == 0) {
    return y;  // a zero-sized grid is not a valid launch
  }
  const DropoutKey key = read_dropout_key(seed_offset);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_cuda", [&] {
    using Acc = kernels::acc_t<typename KernelType<scalar_t>::type>;
    kernels::launch_dropout(kernel_ptr(x.const_data_ptr<scalar_t>()),
                            kernel_ptr(y.mutable_data_ptr<scalar_t>()), x.numel(), key.seed,
                            key.offset, dropout_threshold(p), dropout_scale<Acc>(p), stream);
    after_launch();
  });
  return y;
}

}  // namespace alexnet_kernels
