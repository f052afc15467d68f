// The max-pool kernels in the emulator.
#include "cuda/max_pool_launch.h"
#include "emulated_ops.h"

namespace alexnet_kernels::emulated {

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& x,
                                                       at::IntArrayRef kernel_size,
                                                       at::IntArrayRef stride,
                                                       at::IntArrayRef padding,
                                                       at::IntArrayRef dilation, bool ceil_mode) {
  return run_max_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode,
                              /*stream=*/nullptr, kNoLaunchCheck);
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_y, const at::Tensor& argmax,
                                        at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation, bool ceil_mode) {
  return run_max_pool_backward(grad_y, argmax, input_size, kernel_size, stride, padding, dilation,
                               ceil_mode, /*stream=*/nullptr, kNoLaunchCheck);
}

}  // namespace alexnet_kernels::emulated
