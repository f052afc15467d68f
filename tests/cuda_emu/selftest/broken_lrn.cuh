// Deliberately broken LRN forward kernels, built into the emulated ops library
// (tests/cuda_emu/emulated_ops.cpp) so that the sanitizer jobs can show that they
// catch a bug in the path the real kernels take: Python -> torch op -> host glue ->
// AK_LAUNCH -> emulator. The real kernels (csrc/kernels/lrn.cuh) use no shared
// memory, so these stage a (channels x 32 pixels) tile of x in shared memory, the
// classic design whose two typical bugs the sanitizers must find. Each kernel
// differs from the correct staged kernel in one line, marked BUG.
#pragma once

#include "lrn.cuh"

namespace broken {

using alexnet_kernels::kernels::ak_max;
using alexnet_kernels::kernels::ak_min;
using alexnet_kernels::kernels::kLrnThreads;

constexpr int kTilePixels = 32;

// Size 5, alpha 0.5, beta 0.75, k 1 on a contiguous (N, C, pixels) float tensor; a
// block owns 32 pixels of one image and all C channels.
struct BrokenArgs {
  int channels;
  int64_t pixels;
  int64_t pixel_tiles;
};

inline void stage(float* xs, const float* x, const BrokenArgs& a, int64_t p0, int valid) {
  for (int i = threadIdx.x; i < a.channels * valid; i += blockDim.x) {
    xs[(i / valid) * kTilePixels + i % valid] = x[(i / valid) * a.pixels + p0 + i % valid];
  }
}

inline float normalise(const float* xs, const BrokenArgs& a, int c, int p) {
  float sum = 0;
  for (int j = ak_max(c - 2, 0); j <= ak_min(c + 2, a.channels - 1); ++j) {
    sum += xs[j * kTilePixels + p] * xs[j * kTilePixels + p];
  }
  return xs[c * kTilePixels + p] * powf(1.0f + 0.1f * sum, -0.75f);
}

// The barrier between staging x in shared memory and reading the window sums
// is missing: threads read rows other threads are still writing.
// ThreadSanitizer: data race on the dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_forward_no_barrier(const T* __restrict__ x, T* __restrict__ y, BrokenArgs a) {
  AK_DYNAMIC_SHARED(float, xs);
  const int64_t n = blockIdx.x / a.pixel_tiles;
  const int64_t p0 = (blockIdx.x % a.pixel_tiles) * kTilePixels;
  const int valid = static_cast<int>(ak_min<int64_t>(kTilePixels, a.pixels - p0));
  const int64_t image = n * a.channels * a.pixels;
  stage(xs, x + image, a, p0, valid);
  // BUG: no __syncthreads() here.
  for (int i = threadIdx.x; i < a.channels * valid; i += blockDim.x) {
    y[image + (i / valid) * a.pixels + p0 + i % valid] = normalise(xs, a, i / valid, i % valid);
  }
}

// The output loop runs one element too far (<= instead of <): the extra thread
// normalises channel C, one row past the staged tile, whose first element lies one
// past the end of the shared buffer when the tile is full. AddressSanitizer:
// heap-buffer-overflow (the emulator's dynamic shared memory is a heap block of
// exactly the launch's size).
template <typename T>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_forward_off_by_one(const T* __restrict__ x, T* __restrict__ y, BrokenArgs a) {
  AK_DYNAMIC_SHARED(float, xs);
  const int64_t n = blockIdx.x / a.pixel_tiles;
  const int64_t p0 = (blockIdx.x % a.pixel_tiles) * kTilePixels;
  const int valid = static_cast<int>(ak_min<int64_t>(kTilePixels, a.pixels - p0));
  const int64_t image = n * a.channels * a.pixels;
  stage(xs, x + image, a, p0, valid);
  __syncthreads();
  for (int i = threadIdx.x; i <= a.channels * valid; i += blockDim.x) {  // BUG: <=
    const float v = normalise(xs, a, i / valid, i % valid);
    if (i < a.channels * valid) {
      y[image + (i / valid) * a.pixels + p0 + i % valid] = v;
    }
  }
}

// Launches one of the broken kernels for a contiguous (N, C, pixels) float input.
inline void launch_broken_lrn_forward(bool off_by_one, const float* x, float* y,
                                      const alexnet_kernels::kernels::LrnProblem& problem) {
  BrokenArgs args{static_cast<int>(problem.channels), problem.pixels,
                  alexnet_kernels::kernels::ceil_div<int64_t>(problem.pixels, kTilePixels)};
  const dim3 grid(static_cast<unsigned>(problem.batch * args.pixel_tiles));
  const size_t smem = static_cast<size_t>(problem.channels) * kTilePixels * sizeof(float);
  auto kernel = off_by_one ? &lrn_forward_off_by_one<float> : &lrn_forward_no_barrier<float>;
  AK_LAUNCH(kernel, grid, dim3(kLrnThreads), smem, nullptr)(x, y, args);
}

}  // namespace broken
