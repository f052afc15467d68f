// Cross-channel local response normalisation, forward and backward, as CUDA
// kernels (no PyTorch includes: the same source runs on the CPU in the tests).
//
//   y[c] = x[c] * S[c]^-beta,   S[c] = k + alpha/size * sum_{j = c-lo}^{c+hi} x[j]^2
//   lo = size / 2, hi = (size - 1) / 2, channels outside [0, C) count as zero.
//
// A block owns a tile of kLrnTileChannels channels x tile_pixels pixels of one
// image. It stages the tile plus its channel halo in shared memory once (one
// coalesced read of x), so each window sum reads shared memory instead of
// re-reading global memory `size` times. The layout is (N, C, pixels) or, for
// channels_last input, (N, pixels, C); the fast thread index always walks the
// dimension that is contiguous in memory, and the shared tile is laid out the
// same way so neighbouring threads hit neighbouring banks.
#pragma once

#include "common.cuh"

#include <cstddef>

namespace alexnet_kernels::kernels {

constexpr int kLrnThreads = 256;
constexpr int kLrnTileChannels = 32;
constexpr int kLrnMaxTilePixels = 32;
// Default dynamic shared memory available without an opt-in on every target.
constexpr size_t kLrnSharedBytesLimit = 48 * 1024;
constexpr int64_t kLrnMaxGridY = 65535;
constexpr int64_t kLrnMaxGridX = 2147483647;

struct LrnProblem {
  int64_t batch;
  int64_t channels;
  int64_t pixels;
  bool channels_last;
  int size;
  double alpha;
  double beta;
  double k;
};

// Launch geometry; `valid` is false when no tile fits in shared memory or the
// grid exceeds CUDA's limits, and `reason` then says which.
struct LrnPlan {
  bool valid;
  const char* reason;
  int tile_pixels;
  int rows_capacity;  // channel rows per shared array
  int64_t pixel_tiles;
  size_t smem_bytes;
  dim3 grid;
};

template <typename Acc>
struct LrnArgs {
  int64_t channels;
  int64_t pixels;
  int64_t pixel_tiles;
  int tile_pixels;
  int rows_capacity;
  int half_lo;  // window of channel c is [c - half_lo, c + half_hi]
  int half_hi;
  Acc alpha_over_size;
  Acc neg_beta;
  Acc k;
  Acc grad_coef;  // 2 * alpha * beta / size, applied as x * (grad_coef * sum) (see lrn.cpp)
};

// Shared arrays per block: forward stages x; backward stages x plus, per
// channel of the (wider) halo, g*y/S and g*S^-beta.
inline LrnPlan plan_lrn(const LrnProblem& problem, bool backward, size_t acc_bytes) {
  LrnPlan plan{};
  const int64_t halo = static_cast<int64_t>(problem.size - 1) * (backward ? 2 : 1);
  const int64_t rows = ak_min<int64_t>(kLrnTileChannels + halo, problem.channels);
  const int arrays = backward ? 3 : 1;
  plan.rows_capacity = static_cast<int>(rows);
  plan.tile_pixels = kLrnMaxTilePixels;
  while (plan.tile_pixels > 1 &&
         static_cast<size_t>(arrays * rows * plan.tile_pixels) * acc_bytes > kLrnSharedBytesLimit) {
    plan.tile_pixels /= 2;
  }
  plan.smem_bytes = static_cast<size_t>(arrays * rows * plan.tile_pixels) * acc_bytes;
  plan.pixel_tiles = ceil_div<int64_t>(problem.pixels, plan.tile_pixels);
  const int64_t grid_x = problem.batch * plan.pixel_tiles;
  const int64_t grid_y = ceil_div<int64_t>(problem.channels, kLrnTileChannels);
  plan.valid = true;
  if (plan.smem_bytes > kLrnSharedBytesLimit) {
    plan.valid = false;
    plan.reason = "the channel window (size) is too large for the shared-memory tile";
  } else if (grid_x > kLrnMaxGridX || grid_y > kLrnMaxGridY) {
    plan.valid = false;
    plan.reason = "the tensor has more (N x pixel) tiles or channels than a CUDA grid can cover";
  }
  plan.grid = dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y), 1);
  return plan;
}

template <typename Acc>
LrnArgs<Acc> make_lrn_args(const LrnProblem& problem, const LrnPlan& plan) {
  LrnArgs<Acc> args{};
  args.channels = problem.channels;
  args.pixels = problem.pixels;
  args.pixel_tiles = plan.pixel_tiles;
  args.tile_pixels = plan.tile_pixels;
  args.rows_capacity = plan.rows_capacity;
  args.half_lo = problem.size / 2;
  args.half_hi = (problem.size - 1) / 2;
  args.alpha_over_size = static_cast<Acc>(problem.alpha / problem.size);
  args.neg_beta = static_cast<Acc>(-problem.beta);
  args.k = static_cast<Acc>(problem.k);
  args.grad_coef = static_cast<Acc>(2.0 * problem.alpha * problem.beta / problem.size);
  return args;
}

// Where element (row r = channel - first staged channel, pixel p) of a tile lives
// in shared memory, and where (n, c, pixel) lives in global memory.
template <bool kChannelsLast>
struct LrnTile {
  int64_t channels;
  int64_t pixels;
  int tile_pixels;
  int rows_capacity;
  int64_t n;
  int64_t p0;
  int valid_pixels;

  AK_DEVICE_INLINE int shared_index(int r, int p) const {
    return kChannelsLast ? p * rows_capacity + r : r * tile_pixels + p;
  }
  AK_DEVICE_INLINE int64_t global_index(int64_t c, int p) const {
    return kChannelsLast ? ((n * pixels) + p0 + p) * channels + c
                         : ((n * channels) + c) * pixels + p0 + p;
  }
  // Splits a linear index over `rows` x valid_pixels so that consecutive
  // threads walk the memory-contiguous dimension.
  AK_DEVICE_INLINE void split(int i, int rows, int& r, int& p) const {
    if (kChannelsLast) {
      r = i % rows;
      p = i / rows;
    } else {
      p = i % valid_pixels;
      r = i / valid_pixels;
    }
  }
};

template <bool kChannelsLast, typename Acc>
AK_DEVICE_INLINE LrnTile<kChannelsLast> lrn_block_tile(const LrnArgs<Acc>& a) {
  LrnTile<kChannelsLast> tile{};
  tile.channels = a.channels;
  tile.pixels = a.pixels;
  tile.tile_pixels = a.tile_pixels;
  tile.rows_capacity = a.rows_capacity;
  tile.n = blockIdx.x / a.pixel_tiles;
  tile.p0 = (blockIdx.x % a.pixel_tiles) * a.tile_pixels;
  tile.valid_pixels = static_cast<int>(ak_min<int64_t>(a.tile_pixels, a.pixels - tile.p0));
  return tile;
}

// Copies channels [first, last) of the block's pixels from global to shared memory.
template <typename T, typename Acc, bool kChannelsLast>
AK_DEVICE_INLINE void lrn_stage(Acc* dst, const T* __restrict__ src,
                                const LrnTile<kChannelsLast>& tile, int first, int last) {
  const int rows = last - first;
  for (int i = threadIdx.x; i < rows * tile.valid_pixels; i += blockDim.x) {
    int r, p;
    tile.split(i, rows, r, p);
    ak_st(dst + tile.shared_index(r, p), to_acc(ak_ld(src + tile.global_index(first + r, p))));
  }
}

// S[c] = k + alpha/size * sum of squares over c's window, from staged x whose
// first staged channel is `first`.
template <typename Acc, bool kChannelsLast>
AK_DEVICE_INLINE Acc lrn_scale(const Acc* xs, const LrnTile<kChannelsLast>& tile,
                               const LrnArgs<Acc>& a, int first, int c, int p) {
  const int lo = ak_max(c - a.half_lo, 0);
  const int hi = static_cast<int>(ak_min<int64_t>(c + a.half_hi, a.channels - 1));
  Acc sum = 0;
  for (int j = lo; j <= hi; ++j) {
    const Acc v = ak_ld(xs + tile.shared_index(j - first, p));
    sum += v * v;
  }
  return a.k + a.alpha_over_size * sum;
}

template <typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_forward_kernel(const T* __restrict__ x, T* __restrict__ y, LrnArgs<acc_t<T>> a) {
  using Acc = acc_t<T>;
  AK_DYNAMIC_SHARED(Acc, xs);
  const LrnTile<kChannelsLast> tile = lrn_block_tile<kChannelsLast>(a);
  const int c0 = blockIdx.y * kLrnTileChannels;
  const int c_end = static_cast<int>(ak_min<int64_t>(c0 + kLrnTileChannels, a.channels));
  const int x_first = ak_max(c0 - a.half_lo, 0);
  const int x_last = static_cast<int>(ak_min<int64_t>(c_end + a.half_hi, a.channels));
  lrn_stage<T, Acc, kChannelsLast>(xs, x, tile, x_first, x_last);
  __syncthreads();

  const int rows = c_end - c0;
  for (int i = threadIdx.x; i < rows * tile.valid_pixels; i += blockDim.x) {
    int r, p;
    tile.split(i, rows, r, p);
    const int c = c0 + r;
    const Acc scale = lrn_scale(xs, tile, a, x_first, c, p);
    const Acc xv = ak_ld(xs + tile.shared_index(c - x_first, p));
    ak_st(y + tile.global_index(c, p), from_acc<T>(xv * power(scale, a.neg_beta)));
  }
}

// grad_x[c] = g[c] * S[c]^-beta - 2 alpha beta / size * x[c] * sum_{c'} g[c'] y[c'] / S[c']
// over the channels c' whose window contains c, i.e. c' in [c - hi, c + lo].
template <typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                        const T* __restrict__ y, T* __restrict__ grad_x, LrnArgs<acc_t<T>> a) {
  using Acc = acc_t<T>;
  AK_DYNAMIC_SHARED(Acc, smem);
  const int array_elems = a.rows_capacity * a.tile_pixels;
  Acc* xs = smem;
  Acc* gy_over_s = smem + array_elems;
  Acc* g_pow = smem + 2 * array_elems;
  const LrnTile<kChannelsLast> tile = lrn_block_tile<kChannelsLast>(a);
  const int c0 = blockIdx.y * kLrnTileChannels;
  const int c_end = static_cast<int>(ak_min<int64_t>(c0 + kLrnTileChannels, a.channels));
  const int window = a.half_lo + a.half_hi;
  const int x_first = ak_max(c0 - window, 0);
  const int x_last = static_cast<int>(ak_min<int64_t>(c_end + window, a.channels));
  lrn_stage<T, Acc, kChannelsLast>(xs, x, tile, x_first, x_last);
  __syncthreads();

  const int t_first = ak_max(c0 - a.half_hi, 0);
  const int t_last = static_cast<int>(ak_min<int64_t>(c_end + a.half_lo, a.channels));
  const int t_rows = t_last - t_first;
  for (int i = threadIdx.x; i < t_rows * tile.valid_pixels; i += blockDim.x) {
    int r, p;
    tile.split(i, t_rows, r, p);
    const int c = t_first + r;
    const Acc scale = lrn_scale(xs, tile, a, x_first, c, p);
    const int64_t at = tile.global_index(c, p);
    const Acc g = to_acc(ak_ld(grad_y + at));
    ak_st(gy_over_s + tile.shared_index(r, p), g * to_acc(ak_ld(y + at)) / scale);
    if (c >= c0 && c < c_end) {
      ak_st(g_pow + tile.shared_index(r, p), g * power(scale, a.neg_beta));
    }
  }
  __syncthreads();

  const int rows = c_end - c0;
  for (int i = threadIdx.x; i < rows * tile.valid_pixels; i += blockDim.x) {
    int r, p;
    tile.split(i, rows, r, p);
    const int c = c0 + r;
    const int lo = ak_max(c - a.half_hi, 0);
    const int hi = static_cast<int>(ak_min<int64_t>(c + a.half_lo, a.channels - 1));
    Acc sum = 0;
    for (int j = lo; j <= hi; ++j) {
      sum += ak_ld(gy_over_s + tile.shared_index(j - t_first, p));
    }
    const Acc xv = ak_ld(xs + tile.shared_index(c - x_first, p));
    const Acc grad = ak_ld(g_pow + tile.shared_index(c - t_first, p)) - xv * (a.grad_coef * sum);
    ak_st(grad_x + tile.global_index(c, p), from_acc<T>(grad));
  }
}

// Launch helpers shared by the CUDA launcher and the CPU emulation tests. The
// caller checks plan.valid and skips empty tensors (a zero-sized grid is invalid).
template <typename T>
void launch_lrn_forward(const T* x, T* y, const LrnProblem& problem, const LrnPlan& plan,
                        cudaStream_t stream) {
  const auto args = make_lrn_args<acc_t<T>>(problem, plan);
  auto kernel = problem.channels_last ? &lrn_forward_kernel<T, true> : &lrn_forward_kernel<T, false>;
  AK_LAUNCH(kernel, plan.grid, dim3(kLrnThreads), plan.smem_bytes, stream)(x, y, args);
}

template <typename T>
void launch_lrn_backward(const T* grad_y, const T* x, const T* y, T* grad_x,
                         const LrnProblem& problem, const LrnPlan& plan, cudaStream_t stream) {
  const auto args = make_lrn_args<acc_t<T>>(problem, plan);
  auto kernel =
      problem.channels_last ? &lrn_backward_kernel<T, true> : &lrn_backward_kernel<T, false>;
  AK_LAUNCH(kernel, plan.grid, dim3(kLrnThreads), plan.smem_bytes, stream)(grad_y, x, y, grad_x,
                                                                         args);
}

}  // namespace alexnet_kernels::kernels
