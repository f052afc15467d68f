// CUDA launchers for LRN: device checks, device guard, current stream and the
// launch check around the shared host glue (lrn_launch.h); the kernels
// themselves are in csrc/kernels/lrn.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/checks.h"
#include "cuda/lrn_launch.h"

namespace alexnet_kernels {
namespace {

at::Tensor lrn_forward_cuda(const at::Tensor& x, int64_t size, double alpha, double beta,
                            double k) {
  check_on_cuda("lrn", "x", x);
  const c10::cuda::CUDAGuard guard(x.device());
  return run_lrn_forward(x, size, alpha, beta, k, c10::cuda::getCurrentCUDAStream(),
                         [] { C10_CUDA_KERNEL_LAUNCH_CHECK(); });
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& y,
                             int64_t size, double alpha, double beta, double k) {
  check_on_cuda("lrn_backward", "x", x);
  const c10::cuda::CUDAGuard guard(x.device());
  return run_lrn_backward(grad_y, x, y, size, alpha, beta, k, c10::cuda::getCurrentCUDAStream(),
                          [] { C10_CUDA_KERNEL_LAUNCH_CHECK(); });
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("lrn", &lrn_forward_cuda);
  m.impl("lrn_backward", &lrn_backward_cuda);
}

}  // namespace alexnet_kernels
