// Host-side argument handling of the fused conv2d + bias + ReLU op.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <utility>

namespace alexnet_kernels {

inline void check_conv_pair(const char* name, at::IntArrayRef value, int64_t minimum) {
  TORCH_CHECK(value.size() == 2, "conv2d_relu: ", name,
              " must have two elements (height, width), got ", value);
  TORCH_CHECK(value[0] >= minimum && value[1] >= minimum, "conv2d_relu: ", name,
              " must be at least ", minimum, ", got ", value);
}

// The output size along one axis, or a value < 1 when the window does not fit
// (floor division: a truncating one would count a window that does not fit).
inline int64_t conv_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad,
                                int64_t dilation) {
  const int64_t room = input + 2 * pad - dilation * (kernel - 1) - 1;
  return room < 0 ? 0 : room / stride + 1;
}

// Validates x (N, C, H, W), weight (Cout, C / groups, KH, KW) and bias (Cout).
inline void check_conv2d_relu_arguments(const at::Tensor& x, const at::Tensor& weight,
                                        const c10::optional<at::Tensor>& bias,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "conv2d_relu: x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(weight.dim() == 4, "conv2d_relu: weight must be 4-D (Cout, Cin / groups, KH, KW), "
              "got shape ", weight.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "conv2d_relu: x must be float64, float32, float16 or bfloat16, got ",
              x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "conv2d_relu: weight must have x's dtype ",
              x.scalar_type(), ", got ", weight.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), "conv2d_relu: weight must be on x's device ",
              x.device(), ", got ", weight.device());
  TORCH_CHECK(x.size(2) > 0 && x.size(3) > 0,
              "conv2d_relu: x may be empty only along the batch or channel dimension, got shape ",
              x.sizes());
  check_conv_pair("stride", stride, 1);
  check_conv_pair("padding", padding, 0);
  check_conv_pair("dilation", dilation, 1);
  TORCH_CHECK(groups >= 1, "conv2d_relu: groups must be at least 1, got ", groups);
  const int64_t in_channels = x.size(1);
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(in_channels % groups == 0 && out_channels % groups == 0,
              "conv2d_relu: groups=", groups, " must divide the input channels (", in_channels,
              ") and the output channels (", out_channels, ")");
  TORCH_CHECK(weight.size(1) * groups == in_channels, "conv2d_relu: weight expects ",
              weight.size(1) * groups, " input channels (", weight.size(1), " per group x ",
              groups, " groups), but x has ", in_channels);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_channels,
                "conv2d_relu: bias must have shape (", out_channels, ",), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "conv2d_relu: bias must have x's dtype ",
                x.scalar_type(), ", got ", bias->scalar_type());
  }
  for (int axis = 0; axis < 2; ++axis) {
    const int64_t out = conv_output_size(x.size(2 + axis), weight.size(2 + axis), stride[axis],
                                         padding[axis], dilation[axis]);
    TORCH_CHECK(out >= 1, "conv2d_relu: the (padded) input of size ", x.size(2), "x", x.size(3),
                " is smaller than the (dilated) kernel ", weight.size(2), "x", weight.size(3),
                " with padding=", padding, " and dilation=", dilation);
  }
}

// Validates the backward's tensors: the forward's checks for x and weight,
// then y and grad_y of the forward's output shape and x's dtype and device.
inline void check_conv2d_relu_backward_arguments(const at::Tensor& grad_y, const at::Tensor& x,
                                                 const at::Tensor& weight, const at::Tensor& y,
                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation, int64_t groups) {
  check_conv2d_relu_arguments(x, weight, c10::nullopt, stride, padding, dilation, groups);
  TORCH_CHECK(grad_y.sizes() == y.sizes(), "conv2d_relu_backward: grad_y must have y's shape ",
              y.sizes(), ", got ", grad_y.sizes());
  const int64_t expected[4] = {
      x.size(0), weight.size(0),
      conv_output_size(x.size(2), weight.size(2), stride[0], padding[0], dilation[0]),
      conv_output_size(x.size(3), weight.size(3), stride[1], padding[1], dilation[1])};
  TORCH_CHECK(y.sizes() == at::IntArrayRef(expected), "conv2d_relu_backward: y must have shape ",
              at::IntArrayRef(expected), ", got ", y.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"y", y},
                                std::pair<const char*, const at::Tensor&>{"grad_y", grad_y}}) {
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "conv2d_relu_backward: ", name,
                " must have x's dtype ", x.scalar_type(), ", got ", t.scalar_type());
    TORCH_CHECK(t.device() == x.device(), "conv2d_relu_backward: ", name,
                " must be on x's device ", x.device(), ", got ", t.device());
  }
}

}  // namespace alexnet_kernels
