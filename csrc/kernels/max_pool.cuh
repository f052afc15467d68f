// 2-D max pooling, forward and backward, as CUDA kernels (no PyTorch
// includes: the same source runs on the CPU in the tests).
//
// Forward: one thread per output element. The fast thread index walks the
// dimension that is contiguous in memory (ow for NCHW, c for NHWC), so
// neighbouring threads read neighbouring (NHWC) or nearby, L1-shared (NCHW)
// inputs and write neighbouring outputs; one code path serves both layouts. Besides y it writes the argmax offset
// kh * kernel_w + kw inside the window (see window.h), nothing wider.
//
// Backward: one thread per input element gathers grad_y from the windows that
// cover it and whose argmax it is, in (oh, ow) order: every grad_x element is
// written exactly once, with no atomics, so results are deterministic.
#pragma once

#include "common.cuh"
#include "window.h"

namespace alexnet_kernels::kernels {

constexpr int kMaxPoolThreads = 256;
// Grid limits; larger problems loop (grid-stride) over planes and tiles.
constexpr int64_t kMaxPoolMaxTiles = 65536;
constexpr int64_t kMaxPoolMaxPlanes = 65535;

// The tensor as `planes` independent planes of 32-bit-indexable elements:
// an (image, channel) plane of H x W for NCHW, an image of H x W x C for NHWC.
// Only the plane offset needs 64 bits, and it needs no division, so the
// per-element arithmetic stays in 32-bit registers. The host checks that one
// plane of the input fits in 32-bit indexing.
struct PoolPlanes {
  int64_t planes;
  int in_plane;   // elements of one input plane
  int out_plane;  // elements of one output plane
  int channels;   // C for NHWC (element = pixel * C + c), 1 for NCHW
  int in_h;
  int in_w;
  int out_h;
  int out_w;
};

inline PoolPlanes make_pool_planes(const PoolWindow& w, bool channels_last) {
  PoolPlanes p{};
  const int64_t channels_per_plane = channels_last ? w.channels : 1;
  p.planes = channels_last ? w.batch : w.batch * w.channels;
  p.in_plane = static_cast<int>(w.in_h * w.in_w * channels_per_plane);
  p.out_plane = static_cast<int>(w.out_h * w.out_w * channels_per_plane);
  p.channels = static_cast<int>(channels_per_plane);
  p.in_h = static_cast<int>(w.in_h);
  p.in_w = static_cast<int>(w.in_w);
  p.out_h = static_cast<int>(w.out_h);
  p.out_w = static_cast<int>(w.out_w);
  return p;
}

// The window alone, as the kernels take it.
inline Window2d make_pool_taps(const PoolWindow& w) { return w; }

// Whether every plane of input and output is addressable with 32-bit ints.
inline bool pool_planes_fit_int32(const PoolWindow& w, bool channels_last) {
  const int64_t per_plane = channels_last ? w.channels : 1;
  return w.in_h * w.in_w * per_plane <= INT32_MAX && w.out_h * w.out_w * per_plane <= INT32_MAX;
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_forward_kernel(const T* __restrict__ x, T* __restrict__ y, A* __restrict__ argmax,
                            PoolPlanes planes, Window2d taps) {
  using Acc = acc_t<T>;
  for (int64_t plane = blockIdx.y; plane < planes.planes; plane += gridDim.y) {
    const T* x_plane = x + plane * planes.in_plane;
    const int step = static_cast<int>(gridDim.x * blockDim.x);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < planes.out_plane;
         i = grid_stride_next(i, step, planes.out_plane)) {
      // Element i of the output plane: pixel * channels + c (channels = 1 for NCHW).
      const int c = i % planes.channels;
      const int pixel = i / planes.channels;
      const int oh = pixel / planes.out_w;
      const int ow = pixel % planes.out_w;
      const int kh_first = first_tap_inside(oh, taps.stride_h, taps.pad_h, taps.dilation_h);
      const int kw_first = first_tap_inside(ow, taps.stride_w, taps.pad_w, taps.dilation_w);
      // Padding acts as -inf; the argmax starts at the window's first position
      // inside the input, as in PyTorch, even when every value is -inf.
      Acc best = -INFINITY;
      int best_tap = kh_first * taps.kernel_w + kw_first;
      for (int kh = kh_first; kh < taps.kernel_h; ++kh) {
        const int ih = taps.input_row(oh, kh);
        if (ih >= planes.in_h) break;
        for (int kw = kw_first; kw < taps.kernel_w; ++kw) {
          const int iw = taps.input_col(ow, kw);
          if (iw >= planes.in_w) break;
          const Acc v =
              to_acc(ak_ld(x_plane + ((ih * planes.in_w + iw) * planes.channels + c)));
          // First maximum in window order wins ties; a NaN always takes over.
          if (v > best || v != v) {
            best = v;
            best_tap = kh * taps.kernel_w + kw;
          }
        }
      }
      ak_st(y + (plane * planes.out_plane + i), from_acc<T>(best));
      ak_st(argmax + (plane * planes.out_plane + i), static_cast<A>(best_tap));
    }
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_backward_kernel(const T* __restrict__ grad_y, const A* __restrict__ argmax,
                             T* __restrict__ grad_x, PoolPlanes planes, Window2d taps) {
  using Acc = acc_t<T>;
  for (int64_t plane = blockIdx.y; plane < planes.planes; plane += gridDim.y) {
    const T* g_plane = grad_y + plane * planes.out_plane;
    const A* a_plane = argmax + plane * planes.out_plane;
    const int step = static_cast<int>(gridDim.x * blockDim.x);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < planes.in_plane;
         i = grid_stride_next(i, step, planes.in_plane)) {
      const int c = i % planes.channels;
      const int pixel = i / planes.channels;
      const int ih = pixel / planes.in_w;
      const int iw = pixel % planes.in_w;
      const CoveringOutputs<int> rows = covering_outputs(
          ih, planes.out_h, taps.kernel_h, taps.stride_h, taps.pad_h, taps.dilation_h);
      const CoveringOutputs<int> cols = covering_outputs(
          iw, planes.out_w, taps.kernel_w, taps.stride_w, taps.pad_w, taps.dilation_w);
      Acc sum = 0;
      for (int oh = rows.first; oh <= rows.last; ++oh) {
        const int dh = ih + taps.pad_h - oh * taps.stride_h;
        if (dh % taps.dilation_h != 0) continue;
        for (int ow = cols.first; ow <= cols.last; ++ow) {
          const int dw = iw + taps.pad_w - ow * taps.stride_w;
          if (dw % taps.dilation_w != 0) continue;
          const int o = (oh * planes.out_w + ow) * planes.channels + c;
          if (static_cast<int>(ak_ld(a_plane + o)) ==
              (dh / taps.dilation_h) * taps.kernel_w + dw / taps.dilation_w) {
            sum += to_acc(ak_ld(g_plane + o));
          }
        }
      }
      ak_st(grad_x + (plane * planes.in_plane + i), from_acc<T>(sum));
    }
  }
}

inline dim3 max_pool_grid(int64_t plane_elements, int64_t planes) {
  return dim3(static_cast<unsigned>(
                  ak_min(ceil_div<int64_t>(plane_elements, kMaxPoolThreads), kMaxPoolMaxTiles)),
              static_cast<unsigned>(ak_min(planes, kMaxPoolMaxPlanes)));
}

// Requires a non-empty problem whose planes fit 32-bit indexing (pool_planes_fit_int32).
template <typename T, typename A>
void launch_max_pool_forward(const T* x, T* y, A* argmax, const PoolWindow& w, bool channels_last,
                             cudaStream_t stream) {
  const PoolPlanes planes = make_pool_planes(w, channels_last);
  auto kernel = &max_pool_forward_kernel<T, A>;
  AK_LAUNCH(kernel, max_pool_grid(planes.out_plane, planes.planes), dim3(kMaxPoolThreads), 0,
            stream)(x, y, argmax, planes, make_pool_taps(w));
}

template <typename T, typename A>
void launch_max_pool_backward(const T* grad_y, const A* argmax, T* grad_x, const PoolWindow& w,
                              bool channels_last, cudaStream_t stream) {
  const PoolPlanes planes = make_pool_planes(w, channels_last);
  auto kernel = &max_pool_backward_kernel<T, A>;
  AK_LAUNCH(kernel, max_pool_grid(planes.in_plane, planes.planes), dim3(kMaxPoolThreads), 0,
            stream)(grad_y, argmax, grad_x, planes, make_pool_taps(w));
}

}  // namespace alexnet_kernels::kernels
