// The convolution kernels in the emulator.
#include "cuda/conv2d_relu_launch.h"
#include "emulated_ops.h"

namespace alexnet_kernels::emulated {

at::Tensor conv2d_relu(const at::Tensor& x, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  return run_conv2d_relu_forward(x, weight, bias, stride, padding, dilation, groups,
                                 conv_uses_tf32(x, kEmulatedComputeCapabilityMajor),
                                 /*stream=*/nullptr, kNoLaunchCheck);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_relu_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  return run_conv2d_relu_backward(grad_y, x, weight, y, stride, padding, dilation, groups,
                                  output_mask,
                                  conv_uses_tf32(x, kEmulatedComputeCapabilityMajor),
                                  /*stream=*/nullptr, kNoLaunchCheck);
}

}  // namespace alexnet_kernels::emulated
