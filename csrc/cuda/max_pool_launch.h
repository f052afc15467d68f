// Host glue of the CUDA max-pool kernels that does not depend on a CUDA
// device: checks, layout, output allocation, dtype dispatch. Shared by the
// CUDA launcher (csrc/cuda/max_pool.cu), which adds the device guard, the
// current stream and the launch check, and by the tests that run the same
// kernels on the CPU.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <string>
#include <tuple>

#include "kernel_types.h"
#include "kernels/max_pool.cuh"
#include "max_pool.h"

namespace alexnet_kernels {

inline void check_planes_fit_int32(const kernels::PoolWindow& w, bool channels_last) {
  TORCH_CHECK(kernels::pool_planes_fit_int32(w, channels_last),
              "max_pool2d (CUDA): one ", channels_last ? "image (H x W x C)" : "plane (H x W)",
              " must have fewer than 2^31 elements, got input ", w.in_h, "x", w.in_w,
              channels_last ? "x" + std::to_string(w.channels) : std::string(),
              "; use backend='torch' for this case");
}

// `after_launch()` runs right after each kernel launch (the launch check on a GPU).
template <typename AfterLaunch>
std::tuple<at::Tensor, at::Tensor> run_max_pool_forward(
    const at::Tensor& x_in, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, cudaStream_t stream,
    const AfterLaunch& after_launch) {
  check_pool_input("max_pool2d", x_in, "x");
  const kernels::PoolWindow w =
      make_pool_window(x_in.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  const at::MemoryFormat format = max_pool_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  at::Tensor y = at::empty(pool_output_sizes(w), x.options().memory_format(format));
  at::Tensor argmax = at::empty(pool_output_sizes(w),
                                x.options().dtype(argmax_dtype(w)).memory_format(format));
  if (y.numel() == 0) {
    return {y, argmax};  // a zero-sized grid is not a valid launch
  }
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  check_planes_fit_int32(w, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d_cuda",
                                  [&] {
    dispatch_argmax_type(argmax.scalar_type(), [&](auto index_tag) {
      using A = decltype(index_tag);
      kernels::launch_max_pool_forward(kernel_ptr(x.const_data_ptr<scalar_t>()),
                                       kernel_ptr(y.mutable_data_ptr<scalar_t>()),
                                       argmax.mutable_data_ptr<A>(), w, channels_last, stream);
      after_launch();
    });
  });
  return {y, argmax};
}

template <typename AfterLaunch>
at::Tensor run_max_pool_backward(const at::Tensor& grad_y_in, const at::Tensor& argmax_in,
                                 at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, bool ceil_mode, cudaStream_t stream,
                                 const AfterLaunch& after_launch) {
  const kernels::PoolWindow w = make_pool_backward_window(
      grad_y_in, argmax_in, input_size, kernel_size, stride, padding, dilation, ceil_mode);
  // The forward wrote argmax in the layout it worked in; follow it.
  const at::MemoryFormat format = max_pool_memory_format(argmax_in);
  const at::Tensor grad_y = grad_y_in.contiguous(format);
  const at::Tensor argmax = argmax_in.contiguous(format);
  at::Tensor grad_x = at::empty(input_size, grad_y.options().memory_format(format));
  if (grad_x.numel() == 0) {
    return grad_x;
  }
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  check_planes_fit_int32(w, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_y.scalar_type(),
                                  "max_pool2d_backward_cuda", [&] {
    dispatch_argmax_type(argmax.scalar_type(), [&](auto index_tag) {
      using A = decltype(index_tag);
      kernels::launch_max_pool_backward(kernel_ptr(grad_y.const_data_ptr<scalar_t>()),
                                        argmax.const_data_ptr<A>(),
                                        kernel_ptr(grad_x.mutable_data_ptr<scalar_t>()), w,
                                        channels_last, stream);
      after_launch();
    });
  });
  return grad_x;
}

}  // namespace alexnet_kernels
