// Deliberately broken kernels: each bug must be caught by one specific check
// (ThreadSanitizer, AddressSanitizer, UBSan, or the emulator itself).
// The missing-barrier race is matmul_tiled<..., true> in kernels.cuh.
#pragma once

#include "cuda_compat.h"

namespace broken {

// Off-by-one: the last thread reads in[n], one element past the buffer
// (the guard should be i + 1 < n). AddressSanitizer: heap-buffer-overflow.
__global__ void shift_left(const float* __restrict__ in, float* __restrict__ out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i + 1];
}

// float4 load from a float pointer that is not 16-byte aligned.
// UBSan (-fsanitize=alignment): "load of misaligned address".
__global__ void load_float4(const float* __restrict__ in, float4* __restrict__ out, int offset,
                            int n4) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n4) out[i] = reinterpret_cast<const float4*>(in + offset)[i];
}

// Odd and even threads wait at two different __syncthreads: undefined
// behaviour on a GPU. The emulator's barrier check makes the launch throw.
__global__ void divergent_barrier(int* out) {
  AK_SHARED_ARRAY(int, s, [64]);
  const int tid = static_cast<int>(threadIdx.x);
  s[tid] = tid;
  if (tid % 2 == 0) {
    __syncthreads();
    out[tid] = s[tid ^ 1];
  } else {
    __syncthreads();
    out[tid] = s[tid ^ 1] + 100;
  }
}

// Only block 0 writes the shared arrays, but every block reads them. A plain
// static array would hand block 1 the values of block 0; the per-block poison
// makes the unwritten reads NaN.
__global__ void read_unwritten_shared(float* out) {
  AK_SHARED_ARRAY(float, s, [32]);
  AK_DYNAMIC_SHARED(float, d);
  const unsigned tid = threadIdx.x;
  if (blockIdx.x == 0) {
    s[tid] = static_cast<float>(tid);
    d[tid] = static_cast<float>(tid) + 0.5f;
  }
  __syncthreads();
  const unsigned o = (blockIdx.x * blockDim.x + tid) * 2;
  out[o] = s[tid];
  out[o + 1] = d[tid];
}

// A real hang: thread 0 waits at a barrier for threads that spin on a flag
// which thread 0 would only set after the barrier. The watchdog must abort.
__global__ void spin_deadlock(volatile int* flag) {
  if (threadIdx.x == 0) {
    __syncthreads();
    *flag = 1;
  } else {
    while (*flag == 0) {
    }
  }
}

// A deadlock without spinning: half of the warp waits in __syncwarp for the
// other half, which waits in __syncthreads for the first half.
__global__ void warp_barrier_deadlock(int* out) {
  if (threadIdx.x % 32 < 16) {
    __syncwarp();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// A half-warp mask over a full warp: not supported, must make the launch throw.
__global__ void partial_mask_shuffle(int* out) {
  const int tid = static_cast<int>(threadIdx.x);
  out[tid] = __shfl_sync(0x0000ffffu, tid, 0);
}

// In a block of 48 threads, lanes 0-15 of the second warp read lanes 16-31,
// which do not exist (undefined on a GPU): must make the launch throw.
__global__ void inactive_lane_shuffle(int* out) {
  const int tid = static_cast<int>(threadIdx.x);
  out[tid] = __shfl_down_sync(0xffffffffu, tid, 16);
}

// Any kernel will do for an invalid launch configuration.
__global__ void noop(int*) {}

}  // namespace broken
