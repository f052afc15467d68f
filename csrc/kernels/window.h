// Sliding-window arithmetic shared by the convolution and pooling kernels, on
// the CPU (csrc/cpu) and in CUDA (csrc/kernels/*.cuh). Plain C++ with no
// PyTorch or CUDA include, so every build compiles the same definitions.
//
// Output (oh, ow) looks at input rows ih = oh * stride_h - pad_h + kh * dilation_h
// for kh in [0, kernel_h), and likewise for columns. In pooling, positions
// outside the input act as -inf and the saved argmax is the offset
// kh * kernel_w + kw inside the window, which fits in one byte for windows of
// up to 256 positions.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define AK_WINDOW_HOST_DEVICE __host__ __device__
#else
#define AK_WINDOW_HOST_DEVICE
#endif

namespace alexnet_kernels::kernels {

// Kernel size, stride, padding and dilation of a 2-D window: the part of a
// convolution's or a pool's geometry that does not depend on the tensors.
struct Window2d {
  int kernel_h;
  int kernel_w;
  int stride_h;
  int stride_w;
  int pad_h;
  int pad_w;
  int dilation_h;
  int dilation_w;

  AK_WINDOW_HOST_DEVICE int taps() const { return kernel_h * kernel_w; }
  // Input row / column under tap k of output o (may lie in the padding).
  // Index is int64_t on the CPU and int in the CUDA kernels, which keep their
  // per-element arithmetic in 32 bits.
  template <typename Index>
  AK_WINDOW_HOST_DEVICE Index input_row(Index o, int k) const {
    return o * stride_h - pad_h + static_cast<Index>(k) * dilation_h;
  }
  template <typename Index>
  AK_WINDOW_HOST_DEVICE Index input_col(Index o, int k) const {
    return o * stride_w - pad_w + static_cast<Index>(k) * dilation_w;
  }
};

// Windows with at most this many positions store their argmax in a uint8.
constexpr int64_t kMaxByteArgmaxWindow = 256;

// A max pool over a (batch, channels, in_h, in_w) input.
struct PoolWindow : Window2d {
  int64_t batch;
  int64_t channels;
  int64_t in_h;
  int64_t in_w;
  int64_t out_h;
  int64_t out_w;
};

// First tap k >= 0 whose input position o * stride - pad + k * dilation is not
// negative. PyTorch starts its argmax there even when every tap is -inf, so
// ties and all -inf windows resolve to the same element.
template <typename Index>
AK_WINDOW_HOST_DEVICE inline int first_tap_inside(Index o, int stride, int pad, int dilation) {
  const Index start = o * stride - pad;
  return start >= 0 ? 0 : static_cast<int>((-start + dilation - 1) / dilation);
}

// Outputs [first, last] along one axis whose windows contain input position i
// (empty when first > last); the tap of output o is (i + pad - o * stride) / dilation
// when that division is exact.
template <typename Index>
struct CoveringOutputs {
  Index first;
  Index last;
};

template <typename Index>
AK_WINDOW_HOST_DEVICE inline CoveringOutputs<Index> covering_outputs(Index i, Index out_size,
                                                                    int kernel, int stride,
                                                                    int pad, int dilation) {
  const Index lowest = i + pad - static_cast<Index>(kernel - 1) * dilation;
  const Index first = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
  const Index highest = (i + pad) / stride;  // i + pad >= 0 always
  return {first, highest < out_size - 1 ? highest : out_size - 1};
}

}  // namespace alexnet_kernels::kernels
