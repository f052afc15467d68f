// CUDA launchers for max pooling: device checks, device guard, current stream
// and the launch check around the shared host glue (max_pool_launch.h); the
// kernels themselves are in csrc/kernels/max_pool.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/checks.h"
#include "cuda/max_pool_launch.h"

namespace alexnet_kernels {
namespace {

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& x,
                                                   at::IntArrayRef kernel_size,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, bool ceil_mode) {
  check_on_cuda("max_pool2d", "x", x);
  const c10::cuda::CUDAGuard guard(x.device());
  return run_max_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode,
                              c10::cuda::getCurrentCUDAStream(),
                              [] { C10_CUDA_KERNEL_LAUNCH_CHECK(); });
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_y, const at::Tensor& argmax,
                                    at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode) {
  check_on_cuda("max_pool2d_backward", "grad_y", grad_y);
  check_on_cuda("max_pool2d_backward", "argmax", argmax);
  const c10::cuda::CUDAGuard guard(grad_y.device());
  return run_max_pool_backward(grad_y, argmax, input_size, kernel_size, stride, padding, dilation,
                               ceil_mode, c10::cuda::getCurrentCUDAStream(),
                               [] { C10_CUDA_KERNEL_LAUNCH_CHECK(); });
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("max_pool2d", &max_pool2d_cuda);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cuda);
}

}  // namespace alexnet_kernels
