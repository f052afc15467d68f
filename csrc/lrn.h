// Host-side argument handling shared by the CPU and CUDA LRN implementations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace alexnet_kernels {

// The memory layout the kernels work in: (N, C, pixels) for contiguous input,
// (N, pixels, C) for channels_last / channels_last_3d input. Anything else is
// copied to contiguous first; the output always has the layout worked in.
inline bool lrn_is_channels_last(const at::Tensor& x) {
  if (x.is_contiguous()) {
    return false;
  }
  return (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
         (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d));
}

inline at::MemoryFormat lrn_memory_format(const at::Tensor& x) {
  if (!lrn_is_channels_last(x)) {
    return at::MemoryFormat::Contiguous;
  }
  return x.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
}

inline void check_lrn_arguments(const at::Tensor& x, int64_t size, double alpha, double beta,
                                double k) {
  TORCH_CHECK(x.dim() >= 3, "lrn: x must have at least 3 dimensions (N, C, *), got ", x.dim(),
              " dimensions with shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "lrn: x must be float64, float32, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(size >= 1, "lrn: size must be >= 1, got ", size);
  TORCH_CHECK(size <= INT32_MAX, "lrn: size must fit in 32 bits, got ", size);
  TORCH_CHECK(std::isfinite(alpha), "lrn: alpha must be finite, got ", alpha);
  TORCH_CHECK(std::isfinite(beta), "lrn: beta must be finite, got ", beta);
  TORCH_CHECK(std::isfinite(k), "lrn: k must be finite, got ", k);
}

// beta = 0 makes LRN the identity, y = x * S^0 = x, whatever the window holds;
// the kernels' general formulas would turn a NaN or inf in the window into NaN
// (S^-0 through exp2/log2, 0 * inf in the window term), so callers copy instead.
// The gradient is then PyTorch's: grad_y + 0 * x (its pow backward gives zero
// for a zero exponent, and the x * x of the window sum multiplies that zero by
// x, so a NaN or inf in x, and only there, makes its gradient NaN).
inline bool lrn_is_identity(double beta) { return beta == 0.0; }

inline void check_lrn_backward_arguments(const at::Tensor& grad_y, const at::Tensor& x,
                                         const at::Tensor& y) {
  TORCH_CHECK(grad_y.sizes() == x.sizes() && y.sizes() == x.sizes(),
              "lrn_backward: grad_y, x and y must have the same shape, got ", grad_y.sizes(),
              ", ", x.sizes(), " and ", y.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type() && y.scalar_type() == x.scalar_type(),
              "lrn_backward: grad_y, x and y must have the same dtype, got ",
              grad_y.scalar_type(), ", ", x.scalar_type(), " and ", y.scalar_type());
  TORCH_CHECK(grad_y.device() == x.device() && y.device() == x.device(),
              "lrn_backward: grad_y, x and y must be on the same device, got ", grad_y.device(),
              ", ", x.device(), " and ", y.device());
}

// (N, C, pixels) view of x's shape.
struct LrnExtent {
  int64_t batch;
  int64_t channels;
  int64_t pixels;
};

inline LrnExtent lrn_extent(const at::Tensor& x) {
  int64_t pixels = 1;
  for (int64_t d = 2; d < x.dim(); ++d) {
    pixels *= x.size(d);
  }
  return {x.size(0), x.size(1), pixels};
}

}  // namespace alexnet_kernels
