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
// A seed_offset in host memory is read here and passed by value; one in device
// memory (`key_in_device_memory`) is read by the kernel, so that a key drawn on
// the device under CUDA graph capture changes at every replay.
template <typename AfterLaunch>
at::Tensor run_dropout(const at::Tensor& x_in, const at::Tensor& seed_offset, double p,
                       bool key_in_device_memory, cudaStream_t stream,
                       const AfterLaunch& after_launch) {
  check_dropout_arguments(x_in, seed_offset, p);
  at::Tensor y = dropout_output(x_in);
  const at::Tensor x = dropout_input_like(x_in, y);
  if (y.numel() == 0) {
    return y;  // a zero-sized grid is not a valid launch
  }
  const at::Tensor key_memory = seed_offset.contiguous();
  const DropoutKey key = key_in_device_memory ? DropoutKey{0, 0} : read_dropout_key(key_memory);
  const int64_t* key_pointer =
      key_in_device_memory ? key_memory.const_data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_cuda", [&] {
    using Acc = kernels::acc_t<typename KernelType<scalar_t>::type>;
    kernels::launch_dropout(kernel_ptr(x.const_data_ptr<scalar_t>()),
                            kernel_ptr(y.mutable_data_ptr<scalar_t>()), x.numel(), key.seed,
                            key.offset, key_pointer, dropout_threshold(p), dropout_scale<Acc>(p), stream);
    after_launch();
  });
  return y;
}

}  // namespace alexnet_kernels
