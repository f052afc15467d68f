// Host-side argument handling shared by the CPU and CUDA max-pool implementations:
// the checks and output-size rules of torch.nn.functional.max_pool2d.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <vector>

#include "kernels/window.h"

namespace alexnet_kernels {

// Layout the kernels work in: NCHW, or NHWC for channels_last input. Other
// strides are copied to contiguous first.
inline at::MemoryFormat max_pool_memory_format(const at::Tensor& x) {
  if (!x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

// One pooling argument as ATen's pooling takes it: one element for both axes or
// (height, width); an empty stride means the kernel size.
inline std::array<int64_t, 2> pool_pair(const char* op, const char* name, at::IntArrayRef value,
                                        at::IntArrayRef if_empty = {}) {
  if (value.empty() && !if_empty.empty()) {
    return pool_pair(op, name, if_empty);
  }
  TORCH_CHECK(value.size() == 1 || value.size() == 2, op, ": ", name,
              " must have one or two elements (height, width), got ", value.size());
  const std::array<int64_t, 2> pair{value[0], value[value.size() - 1]};
  TORCH_CHECK(pair[0] <= INT32_MAX && pair[1] <= INT32_MAX, op, ": ", name,
              " must fit in 32 bits, got ", value);
  return pair;
}

// PyTorch's pooling output size along one axis (ATen/native/Pool.h): in ceil
// mode the last window must still start inside the input or its left padding.
inline int64_t pool_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad,
                                int64_t dilation, bool ceil_mode) {
  const int64_t span = input + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // Floor division (span may be negative when the window does not fit).
  const int64_t quotient = span >= 0 ? span / stride : -((-span + stride - 1) / stride);
  int64_t output = quotient + 1;
  if (ceil_mode && (output - 1) * stride >= input + pad) {
    --output;
  }
  return output;
}

inline void check_pool_input(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be float64, float32, float16 or bfloat16, got ", t.scalar_type());
}

// Validates the arguments of a max pool over an input of shape `x_sizes`
// (4-D: N, C, H, W) and returns its geometry.
inline kernels::PoolWindow make_pool_window(at::IntArrayRef x_sizes,
                                            at::IntArrayRef kernel_size_arg,
                                            at::IntArrayRef stride_arg,
                                            at::IntArrayRef padding_arg,
                                            at::IntArrayRef dilation_arg, bool ceil_mode) {
  constexpr const char* op = "max_pool2d";
  TORCH_CHECK(x_sizes.size() == 4, op, ": x must be 4-D (N, C, H, W), got ", x_sizes.size(),
              "-D with shape ", x_sizes);
  const auto kernel = pool_pair(op, "kernel_size", kernel_size_arg);
  const auto stride = pool_pair(op, "stride", stride_arg, kernel_size_arg);
  const auto padding = pool_pair(op, "padding", padding_arg);
  const auto dilation = pool_pair(op, "dilation", dilation_arg);
  TORCH_CHECK(kernel[0] > 0 && kernel[1] > 0,
              "max_pool2d: kernel_size must be greater than zero, got ", kernel_size_arg);
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, "max_pool2d: stride must be greater than zero, got ",
              stride_arg);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0,
              "max_pool2d: dilation must be greater than zero, got ", dilation_arg);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, "max_pool2d: padding must be non-negative, got ",
              padding_arg);
  TORCH_CHECK(padding[0] <= kernel[0] / 2 && padding[1] <= kernel[1] / 2,
              "max_pool2d: padding must be at most half of kernel_size, got padding=",
              padding_arg, " and kernel_size=", kernel_size_arg);
  TORCH_CHECK(x_sizes[1] > 0 && x_sizes[2] > 0 && x_sizes[3] > 0,
              "max_pool2d: x may be empty only along the batch dimension, got shape ", x_sizes);
  kernels::PoolWindow w{};
  w.batch = x_sizes[0];
  w.channels = x_sizes[1];
  w.in_h = x_sizes[2];
  w.in_w = x_sizes[3];
  w.kernel_h = static_cast<int>(kernel[0]);
  w.kernel_w = static_cast<int>(kernel[1]);
  w.stride_h = static_cast<int>(stride[0]);
  w.stride_w = static_cast<int>(stride[1]);
  w.pad_h = static_cast<int>(padding[0]);
  w.pad_w = static_cast<int>(padding[1]);
  w.dilation_h = static_cast<int>(dilation[0]);
  w.dilation_w = static_cast<int>(dilation[1]);
  w.out_h = pool_output_size(w.in_h, w.kernel_h, w.stride_h, w.pad_h, w.dilation_h, ceil_mode);
  w.out_w = pool_output_size(w.in_w, w.kernel_w, w.stride_w, w.pad_w, w.dilation_w, ceil_mode);
  TORCH_CHECK(w.out_h >= 1 && w.out_w >= 1, "max_pool2d: the (padded) input of size ", w.in_h,
              "x", w.in_w, " is too small for kernel_size=", kernel_size_arg, " with dilation=",
              dilation_arg, " and padding=", padding_arg, ": the output would be ", w.out_h, "x",
              w.out_w);
  return w;
}

// uint8 argmax for windows of up to 256 positions, int32 beyond.
inline at::ScalarType argmax_dtype(const kernels::PoolWindow& w) {
  return static_cast<int64_t>(w.kernel_h) * w.kernel_w <= kernels::kMaxByteArgmaxWindow
             ? at::kByte
             : at::kInt;
}

// Calls fn(A{}) with the element type of an argmax tensor of dtype `type` (uint8 or int32).
template <typename Fn>
void dispatch_argmax_type(at::ScalarType type, const Fn& fn) {
  if (type == at::kByte) {
    fn(uint8_t{});
  } else {
    fn(int32_t{});
  }
}

inline std::vector<int64_t> pool_output_sizes(const kernels::PoolWindow& w) {
  return {w.batch, w.channels, w.out_h, w.out_w};
}

// Validates a backward call: grad_y and argmax of one forward, input_size its x.
inline kernels::PoolWindow make_pool_backward_window(
    const at::Tensor& grad_y, const at::Tensor& argmax, at::IntArrayRef input_size,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, bool ceil_mode) {
  check_pool_input("max_pool2d_backward", grad_y, "grad_y");
  const kernels::PoolWindow w =
      make_pool_window(input_size, kernel_size, stride, padding, dilation, ceil_mode);
  const std::vector<int64_t> expected = pool_output_sizes(w);
  TORCH_CHECK(grad_y.sizes() == at::IntArrayRef(expected),
              "max_pool2d_backward: grad_y must have the forward's output shape ",
              at::IntArrayRef(expected), ", got ", grad_y.sizes());
  TORCH_CHECK(argmax.sizes() == grad_y.sizes(),
              "max_pool2d_backward: argmax must have grad_y's shape ", grad_y.sizes(), ", got ",
              argmax.sizes());
  TORCH_CHECK(argmax.scalar_type() == argmax_dtype(w), "max_pool2d_backward: argmax must be ",
              argmax_dtype(w), " for a ", kernel_size, " window, got ", argmax.scalar_type());
  TORCH_CHECK(argmax.device() == grad_y.device(),
              "max_pool2d_backward: grad_y and argmax must be on the same device, got ",
              grad_y.device(), " and ", argmax.device());
  return w;
}

}  // namespace alexnet_kernels
