// Deliberately broken copies of csrc/kernels/lrn.cuh's forward kernel, built
// into the emulated ops library (tests/cuda_emu/emulated_ops.cpp) so that the
// sanitizer jobs can show that they catch a bug in the very path the real
// kernels take: Python -> torch op -> host glue -> AK_LAUNCH -> emulator.
// Each differs from lrn_forward_kernel in one line, marked BUG.
#pragma once

#include "lrn.cuh"

namespace broken {

using alexnet_kernels::kernels::acc_t;
using alexnet_kernels::kernels::ak_max;
using alexnet_kernels::kernels::ak_min;
using alexnet_kernels::kernels::from_acc;
using alexnet_kernels::kernels::kLrnThreads;
using alexnet_kernels::kernels::kLrnTileChannels;
using alexnet_kernels::kernels::LrnArgs;
using alexnet_kernels::kernels::LrnTile;
using alexnet_kernels::kernels::power;

// The barrier between staging x in shared memory and reading the window sums
// is missing: threads read rows other threads are still writing.
// ThreadSanitizer: data race on the dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_forward_no_barrier(const T* __restrict__ x, T* __restrict__ y, LrnArgs<acc_t<T>> a) {
  using Acc = acc_t<T>;
  AK_DYNAMIC_SHARED(Acc, xs);
  const LrnTile<false> tile = alexnet_kernels::kernels::lrn_block_tile<false>(a);
  const int c0 = blockIdx.y * kLrnTileChannels;
  const int c_end = static_cast<int>(ak_min<int64_t>(c0 + kLrnTileChannels, a.channels));
  const int x_first = ak_max(c0 - a.half_lo, 0);
  const int x_last = static_cast<int>(ak_min<int64_t>(c_end + a.half_hi, a.channels));
  alexnet_kernels::kernels::lrn_stage<T, Acc, false>(xs, x, tile, x_first, x_last);
  // BUG: no __syncthreads() here.

  const int rows = c_end - c0;
  for (int i = threadIdx.x; i < rows * tile.valid_pixels; i += blockDim.x) {
    int r, p;
    tile.split(i, rows, r, p);
    const int c = c0 + r;
    const Acc scale = alexnet_kernels::kernels::lrn_scale(xs, tile, a, x_first, c, p);
    const Acc xv = xs[tile.shared_index(c - x_first, p)];
    y[tile.global_index(c, p)] = from_acc<T>(xv * power(scale, a.neg_beta));
  }
}

// The output loop runs one element too far (<= instead of <): the extra
// thread normalises channel c_end, one row past the staged tile. When all
// channels fit in one tile (as in the test), that row starts one element past
// the end of the shared buffer. AddressSanitizer: heap-buffer-overflow (the
// emulator's dynamic shared memory is a heap block of exactly the launch's
// size).
template <typename T>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_forward_off_by_one(const T* __restrict__ x, T* __restrict__ y, LrnArgs<acc_t<T>> a) {
  using Acc = acc_t<T>;
  AK_DYNAMIC_SHARED(Acc, xs);
  const LrnTile<false> tile = alexnet_kernels::kernels::lrn_block_tile<false>(a);
  const int c0 = blockIdx.y * kLrnTileChannels;
  const int c_end = static_cast<int>(ak_min<int64_t>(c0 + kLrnTileChannels, a.channels));
  const int x_first = ak_max(c0 - a.half_lo, 0);
  const int x_last = static_cast<int>(ak_min<int64_t>(c_end + a.half_hi, a.channels));
  alexnet_kernels::kernels::lrn_stage<T, Acc, false>(xs, x, tile, x_first, x_last);
  __syncthreads();

  const int rows = c_end - c0;
  for (int i = threadIdx.x; i <= rows * tile.valid_pixels; i += blockDim.x) {  // BUG: <=
    int r, p;
    tile.split(i, rows, r, p);
    const int c = c0 + r;
    const Acc scale = alexnet_kernels::kernels::lrn_scale(xs, tile, a, x_first, c, p);
    const Acc xv = xs[tile.shared_index(c - x_first, p)];
    y[tile.global_index(c, p)] = from_acc<T>(xv * power(scale, a.neg_beta));
  }
}

// Launches one of the broken kernels with the real kernel's plan and
// arguments, for a contiguous (N, C, pixels) input.
template <typename T>
void launch_broken_lrn_forward(bool off_by_one, const T* x, T* y,
                               const alexnet_kernels::kernels::LrnProblem& problem,
                               const alexnet_kernels::kernels::LrnPlan& plan) {
  const auto args = alexnet_kernels::kernels::make_lrn_args<acc_t<T>>(problem, plan);
  auto kernel = off_by_one ? &lrn_forward_off_by_one<T> : &lrn_forward_no_barrier<T>;
  AK_LAUNCH(kernel, plan.grid, dim3(kLrnThreads), plan.smem_bytes, nullptr)(x, y, args);
}

}  // namespace broken
