// CUDA launcher for dropout: device check, device guard, current stream and the
// launch check around the shared host glue (dropout_launch.h); the kernel
// itself is in csrc/kernels/dropout.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/checks.h"
#include "cuda/dropout_launch.h"

namespace alexnet_kernels {
namespace {

at::Tensor dropout_cuda(const at::Tensor& x, const at::Tensor& seed_offset, double p) {
  check_on_cuda("dropout", "x", x);
  const c10::cuda::CUDAGuard guard(x.device());
  return run_dropout(x, seed_offset, p, /*key_in_device_memory=*/seed_offset.is_cuda(),
                     c10::cuda::getCurrentCUDAStream(),
                     [] { C10_CUDA_KERNEL_LAUNCH_CHECK(); });
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("dropout", &dropout_cuda);
}

}  // namespace alexnet_kernels
