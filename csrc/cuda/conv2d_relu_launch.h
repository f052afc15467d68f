// Host glue of the CUDA conv2d + bias + ReLU kernels that does not depend on a
// CUDA device: checks, layout, output and workspace allocation, launch plans,
// dtype dispatch. Shared by the CUDA launcher (csrc/cuda/conv2d_relu.cu), which
// adds the device guard, the current stream and the launch check, and by the
// tests that run the same kernels on the CPU.
#pragma once

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Optional.h>

#include <array>
#include <cstdint>
#include <limits>
#include <tuple>

#include "conv2d_relu.h"
#include "kernel_types.h"
#include "kernels/conv2d_relu.cuh"

namespace alexnet_kernels {

inline at::MemoryFormat conv2d_relu_memory_format(const at::Tensor& x) {
  return x.suggest_memory_format() == at::MemoryFormat::ChannelsLast
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline int checked_int(const char* what, int64_t value) {
  TORCH_CHECK(value <= std::numeric_limits<int>::max(), "conv2d_relu (CUDA): ", what,
              " must be below 2^31, got ", value, "; use backend='torch' for this case");
  return static_cast<int>(value);
}

// The shape of a checked convolution; one image of x and of y must be
// 32-bit indexable (the kernels' in-image arithmetic).
inline kernels::ConvShape make_conv_shape(const at::Tensor& x, const at::Tensor& weight,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups,
                                          at::MemoryFormat format) {
  kernels::ConvShape s{};
  s.batch = x.size(0);
  s.in_channels = checked_int("the input channels", x.size(1));
  s.in_h = checked_int("the input height", x.size(2));
  s.in_w = checked_int("the input width", x.size(3));
  s.out_channels = checked_int("the output channels", weight.size(0));
  s.kernel_h = checked_int("the kernel height", weight.size(2));
  s.kernel_w = checked_int("the kernel width", weight.size(3));
  s.stride_h = checked_int("stride", stride[0]);
  s.stride_w = checked_int("stride", stride[1]);
  s.pad_h = checked_int("padding", padding[0]);
  s.pad_w = checked_int("padding", padding[1]);
  s.dilation_h = checked_int("dilation", dilation[0]);
  s.dilation_w = checked_int("dilation", dilation[1]);
  s.groups = checked_int("groups", groups);
  s.out_h = static_cast<int>(
      conv_output_size(s.in_h, s.kernel_h, s.stride_h, s.pad_h, s.dilation_h));
  s.out_w = static_cast<int>(
      conv_output_size(s.in_w, s.kernel_w, s.stride_w, s.pad_w, s.dilation_w));
  s.channels_last = format == at::MemoryFormat::ChannelsLast;
  checked_int("one image of x (C x H x W)", kernels::input_activation(s).image_size());
  checked_int("one image of y (Cout x OH x OW)", kernels::output_activation(s).image_size());
  checked_int("the weight's elements", static_cast<int64_t>(s.out_channels) * s.filter_size());
  // Window positions (e.g. oh * stride + kh * dilation) are computed in 32 bits.
  checked_int("the padded, dilated input extent",
              static_cast<int64_t>(s.in_h) + s.pad_h + static_cast<int64_t>(s.kernel_h) *
                                                           s.dilation_h + s.stride_h);
  checked_int("the padded, dilated input extent",
              static_cast<int64_t>(s.in_w) + s.pad_w + static_cast<int64_t>(s.kernel_w) *
                                                           s.dilation_w + s.stride_w);
  return s;
}

inline void check_conv_plan(const kernels::ConvPlan& plan, const char* pass,
                            const at::Tensor& x) {
  TORCH_CHECK(plan.valid, "conv2d_relu (CUDA): cannot run the ", pass, " on input shape ",
              x.sizes(), ": ", plan.reason, "; use backend='torch' for this case");
}

// Whether float32 GEMMs may use TF32 tensor cores: as PyTorch's own convolution,
// when torch.backends.cudnn.allow_tf32 (the CONV float32 precision) allows it
// and the device has them (compute capability 8.0 or newer).
inline bool conv_uses_tf32(const at::Tensor& x, int compute_capability_major) {
  return x.scalar_type() == at::kFloat && compute_capability_major >= 8 &&
         at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
}

template <typename scalar_t>
bool is_16_byte_aligned(const scalar_t* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// `tf32`: float32 GEMMs may use TF32 tensor cores (PyTorch's convolution setting
// allows it and the device has them). `after_launch()` runs right after each
// kernel launch (the launch check on a GPU).
template <typename AfterLaunch>
at::Tensor run_conv2d_relu_forward(const at::Tensor& x_in, const at::Tensor& weight_in,
                                   const c10::optional<at::Tensor>& bias_in,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups, bool tf32,
                                   cudaStream_t stream, const AfterLaunch& after_launch) {
  check_conv2d_relu_arguments(x_in, weight_in, bias_in, stride, padding, dilation, groups);
  const at::MemoryFormat format = conv2d_relu_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  const at::Tensor bias = has_bias ? bias_in->contiguous() : at::Tensor();
  const kernels::ConvShape s =
      make_conv_shape(x, weight_in, stride, padding, dilation, groups, format);
  // The pipelined kernel reads K = (kh, kw, cin): the weight as OHWI (channels_last,
  // free when it already is), x and the weight by 16-byte copies.
  const bool half_type = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const bool pipelined_shape = kernels::conv_forward_is_pipelined(s, half_type);
  at::Tensor weight = pipelined_shape ? weight_in.contiguous(at::MemoryFormat::ChannelsLast)
                                      : weight_in.contiguous();
  const bool pipelined = pipelined_shape && is_16_byte_aligned(x.const_data_ptr()) &&
                         is_16_byte_aligned(weight.const_data_ptr());
  if (pipelined_shape && !pipelined) {
    weight = weight_in.contiguous();  // an unaligned view: the other kernel, on OIHW
  }
  at::Tensor y = at::empty({s.batch, s.out_channels, s.out_h, s.out_w},
                           x.options().memory_format(format));
  if (y.numel() == 0) {
    return y;  // a zero-sized grid is not a valid launch
  }
  const kernels::ConvPlan plan = kernels::plan_conv_forward(s, pipelined);
  check_conv_plan(plan, "forward", x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "conv2d_relu_forward_cuda", [&] {
    using T = typename KernelType<scalar_t>::type;
    kernels::ConvForwardArgs<T> args{};
    args.x = kernel_ptr(x.const_data_ptr<scalar_t>());
    args.w = kernel_ptr(weight.const_data_ptr<scalar_t>());
    args.bias = has_bias ? kernel_ptr(bias.const_data_ptr<scalar_t>()) : nullptr;
    args.y = kernel_ptr(y.mutable_data_ptr<scalar_t>());
    args.s = s;
    args.w_aligned16 = is_16_byte_aligned(args.w) &&
                       (static_cast<int64_t>(s.filter_size()) * sizeof(T)) % 16 == 0;
    kernels::launch_conv2d_relu_forward(args, plan, tf32, stream);
    after_launch();
  });
  return y;
}

template <typename AfterLaunch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_conv2d_relu_backward(
    const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const at::Tensor& y_in, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask, bool tf32,
    cudaStream_t stream, const AfterLaunch& after_launch) {
  check_conv2d_relu_backward_arguments(grad_y_in, x_in, weight_in, y_in, stride, padding,
                                       dilation, groups);
  const at::MemoryFormat format = conv2d_relu_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor y = y_in.contiguous(format);
  const at::Tensor grad_y = grad_y_in.contiguous(format);
  const kernels::ConvShape s = make_conv_shape(x, weight, stride, padding, dilation, groups, format);
  const bool any_output = y.numel() > 0;
  at::Tensor grad_x = at::empty({0}, x.options());
  at::Tensor grad_w = at::empty({0}, x.options());
  at::Tensor grad_b = at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "conv2d_relu_backward_cuda", [&] {
    using T = typename KernelType<scalar_t>::type;
    kernels::ConvBackwardArgs<T> args{};
    args.grad_y = kernel_ptr(grad_y.const_data_ptr<scalar_t>());
    args.x = kernel_ptr(x.const_data_ptr<scalar_t>());
    args.w = kernel_ptr(weight.const_data_ptr<scalar_t>());
    args.y = kernel_ptr(y.const_data_ptr<scalar_t>());
    args.s = s;
    if (output_mask[0]) {
      grad_x = at::empty(x.sizes(), x.options().memory_format(format));
      if (grad_x.numel() > 0) {
        const kernels::ConvPlan plan = kernels::plan_conv_grad_input(s);
        check_conv_plan(plan, "input gradient", x);
        args.grad_x = kernel_ptr(grad_x.mutable_data_ptr<scalar_t>());
        kernels::launch_conv2d_relu_grad_input(args, plan, tf32, stream);
        after_launch();
      }
    }
    if (output_mask[1]) {
      grad_w = any_output ? at::empty(weight.sizes(), weight.options())
                          : at::zeros(weight.sizes(), weight.options());
      if (any_output) {
        const kernels::ConvPlan plan = kernels::plan_conv_grad_weight(s);
        check_conv_plan(plan, "weight gradient", x);
        const at::ScalarType acc_type =
            x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
        const at::Tensor slices =
            at::empty({plan.slices * weight.numel()}, x.options().dtype(acc_type));
        args.grad_w_slices = slices.mutable_data_ptr<kernels::acc_t<T>>();
        args.slice_depth = plan.slice_depth;
        kernels::launch_conv2d_relu_grad_weight(
            args, plan, kernel_ptr(grad_w.mutable_data_ptr<scalar_t>()), tf32, stream,
            after_launch);
      }
      // As PyTorch's convolution_backward (and so the fake kernel): grad_weight
      // in x's memory format.
      grad_w = grad_w.contiguous(format);
    }
    if (output_mask[2]) {
      grad_b = any_output ? at::empty({s.out_channels}, x.options())
                          : at::zeros({s.out_channels}, x.options());
      if (any_output) {
        kernels::launch_conv2d_relu_grad_bias(args.grad_y, args.y, s,
                                              kernel_ptr(grad_b.mutable_data_ptr<scalar_t>()),
                                              stream);
        after_launch();
      }
    }
  });
  return {grad_x, grad_w, grad_b};
}

}  // namespace alexnet_kernels
