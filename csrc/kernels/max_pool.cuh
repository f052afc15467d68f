// 2-D max pooling, forward and backward, as CUDA kernels (no PyTorch
// includes: the same source runs on the CPU in the tests).
//
// Forward: one thread per output element. The fast thread index walks the
// dimension that is contiguous in memory (ow for NCHW, c for NHWC), so
// neighbouring threads read neighbouring (NHWC) or nearby, L1-shared (NCHW)
// inputs and write neighbouring outputs. Besides y it writes the argmax offset
// kh * kernel_w + kw inside the window (see pool_window.h), nothing wider.
//
// Backward: one thread per input element gathers grad_y from the windows that
// cover it and whose argmax it is, in (oh, ow) order: every grad_x element is
// written exactly once, with no atomics, so results are deterministic.
#pragma once

#include "common.cuh"
#include "pool_window.h"

namespace alexnet_kernels::kernels {

constexpr int kMaxPoolThreads = 256;
// Blocks per launch beyond which threads loop (grid-stride) instead.
constexpr int64_t kMaxPoolMaxBlocks = int64_t{1} << 20;

// Position of a linear index in an (N, C, H, W) tensor stored as NCHW or NHWC.
struct Position {
  int64_t n;
  int64_t c;
  int64_t h;
  int64_t w;
};

template <bool kChannelsLast>
AK_HOST_DEVICE inline Position unravel(int64_t i, int64_t channels, int64_t height, int64_t width) {
  Position p{};
  if constexpr (kChannelsLast) {
    p.c = i % channels;
    i /= channels;
    p.w = i % width;
    i /= width;
    p.h = i % height;
    p.n = i / height;
  } else {
    p.w = i % width;
    i /= width;
    p.h = i % height;
    i /= height;
    p.c = i % channels;
    p.n = i / channels;
  }
  return p;
}

template <bool kChannelsLast>
AK_HOST_DEVICE inline int64_t ravel(int64_t n, int64_t c, int64_t h, int64_t w, int64_t channels,
                                    int64_t height, int64_t width) {
  if constexpr (kChannelsLast) {
    return ((n * height + h) * width + w) * channels + c;
  } else {
    return ((n * channels + c) * height + h) * width + w;
  }
}

template <typename T, typename A, bool kChannelsLast>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_forward_kernel(const T* __restrict__ x, T* __restrict__ y, A* __restrict__ argmax,
                            PoolWindow w, int64_t total) {
  using Acc = acc_t<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const Position o = unravel<kChannelsLast>(i, w.channels, w.out_h, w.out_w);
    const int kh_first = first_tap_inside(o.h, w.stride_h, w.pad_h, w.dilation_h);
    const int kw_first = first_tap_inside(o.w, w.stride_w, w.pad_w, w.dilation_w);
    // Padding acts as -inf; the argmax starts at the window's first position
    // inside the input, as in PyTorch, even when every value is -inf.
    Acc best = -INFINITY;
    int best_tap = kh_first * w.kernel_w + kw_first;
    for (int kh = kh_first; kh < w.kernel_h; ++kh) {
      const int64_t ih = o.h * w.stride_h - w.pad_h + static_cast<int64_t>(kh) * w.dilation_h;
      if (ih >= w.in_h) break;
      for (int kw = kw_first; kw < w.kernel_w; ++kw) {
        const int64_t iw = o.w * w.stride_w - w.pad_w + static_cast<int64_t>(kw) * w.dilation_w;
        if (iw >= w.in_w) break;
        const Acc v =
            to_acc(x[ravel<kChannelsLast>(o.n, o.c, ih, iw, w.channels, w.in_h, w.in_w)]);
        // First maximum in window order wins ties; a NaN always takes over.
        if (v > best || v != v) {
          best = v;
          best_tap = kh * w.kernel_w + kw;
        }
      }
    }
    y[i] = from_acc<T>(best);
    argmax[i] = static_cast<A>(best_tap);
  }
}

template <typename T, typename A, bool kChannelsLast>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_backward_kernel(const T* __restrict__ grad_y, const A* __restrict__ argmax,
                             T* __restrict__ grad_x, PoolWindow w, int64_t total) {
  using Acc = acc_t<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const Position p = unravel<kChannelsLast>(i, w.channels, w.in_h, w.in_w);
    const CoveringOutputs rows =
        covering_outputs(p.h, w.out_h, w.kernel_h, w.stride_h, w.pad_h, w.dilation_h);
    const CoveringOutputs cols =
        covering_outputs(p.w, w.out_w, w.kernel_w, w.stride_w, w.pad_w, w.dilation_w);
    Acc sum = 0;
    for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
      const int64_t dh = p.h + w.pad_h - oh * w.stride_h;
      if (dh % w.dilation_h != 0) continue;
      for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
        const int64_t dw = p.w + w.pad_w - ow * w.stride_w;
        if (dw % w.dilation_w != 0) continue;
        const int64_t o = ravel<kChannelsLast>(p.n, p.c, oh, ow, w.channels, w.out_h, w.out_w);
        const int64_t tap = (dh / w.dilation_h) * w.kernel_w + dw / w.dilation_w;
        if (static_cast<int64_t>(argmax[o]) == tap) {
          sum += to_acc(grad_y[o]);
        }
      }
    }
    grad_x[i] = from_acc<T>(sum);
  }
}

inline dim3 max_pool_grid(int64_t total) {
  return dim3(static_cast<unsigned>(ak_min(ceil_div<int64_t>(total, kMaxPoolThreads),
                                           kMaxPoolMaxBlocks)));
}

// `total` = number of outputs (forward) or inputs (backward), > 0.
template <typename T, typename A>
void launch_max_pool_forward(const T* x, T* y, A* argmax, const PoolWindow& w, bool channels_last,
                             cudaStream_t stream) {
  const int64_t total = w.batch * w.channels * w.out_h * w.out_w;
  auto kernel = channels_last ? &max_pool_forward_kernel<T, A, true>
                              : &max_pool_forward_kernel<T, A, false>;
  AK_LAUNCH(kernel, max_pool_grid(total), dim3(kMaxPoolThreads), 0, stream)(x, y, argmax, w, total);
}

template <typename T, typename A>
void launch_max_pool_backward(const T* grad_y, const A* argmax, T* grad_x, const PoolWindow& w,
                              bool channels_last, cudaStream_t stream) {
  const int64_t total = w.batch * w.channels * w.in_h * w.in_w;
  auto kernel = channels_last ? &max_pool_backward_kernel<T, A, true>
                              : &max_pool_backward_kernel<T, A, false>;
  AK_LAUNCH(kernel, max_pool_grid(total), dim3(kMaxPoolThreads), 0, stream)(grad_y, argmax, grad_x,
                                                                          w, total);
}

}  // namespace alexnet_kernels::kernels
