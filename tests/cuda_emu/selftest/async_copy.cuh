// Self-test kernels of the emulated cp.async and ldmatrix (emu_device.h),
// through the kernels' own wrappers (csrc/kernels/cuda_compat.h, mma.cuh):
// correct uses whose results the driver checks exactly, and wrong uses whose
// failure (poison, wrong product, launch error, data race) is the point.
#pragma once

#include "cuda_compat.h"
#include "mma.cuh"

#include <cstdint>

namespace selftest::async_copy {

constexpr int kThreads = 64;

// Thread t copies, with one cp.async each: in[4t..4t+3] (16 bytes; only the
// first 8 for t % 5 == 0, the rest zero-filled), in[256 + 2t..] (8 bytes) and
// in[384 + t] (4 bytes) as group 0, then in[448 + 4t..] (16 bytes) as group 1.
// After wait_group 1 group 0 has landed; kReadBeforeWait then reads group 1's
// destination too early (poison, NaN), the correct kernel first waits for
// everything. A barrier later every thread reads its neighbour's t ^ 1 copies:
// out[7t..7t+6] = the 16-byte, 8-byte, 4-byte copies, then in[448 + 4(t ^ 1)].
template <bool kReadBeforeWait>
__global__ void copy_groups(const float* __restrict__ in, float* __restrict__ out) {
  AK_SHARED_ARRAY(float4, s16, [kThreads]);
  AK_SHARED_ARRAY(float2, s8, [kThreads]);
  AK_SHARED_ARRAY(float, s4, [kThreads]);
  AK_SHARED_ARRAY(float, late, [kThreads]);
  AK_SHARED_ARRAY(float4, s16_late, [kThreads]);
  const int t = static_cast<int>(threadIdx.x);
  ak_cp_async<16>(&s16[t], in + 4 * t, t % 5 == 0 ? 8 : 16);
  ak_cp_async<8>(&s8[t], in + 256 + 2 * t, 8);
  ak_cp_async<4>(&s4[t], in + 384 + t, 4);
  ak_cp_async_commit();
  ak_cp_async<16>(&s16_late[t], in + 448 + 4 * t, 16);
  ak_cp_async_commit();
  ak_cp_async_wait<1>();
  if constexpr (kReadBeforeWait) {
    late[t] = s16_late[t].x;  // group 1 may still be in flight
    ak_cp_async_wait<0>();
  } else {
    ak_cp_async_wait<0>();
    late[t] = s16_late[t].x;
  }
  __syncthreads();
  const int n = t ^ 1;
  float* o = out + 7 * t;
  o[0] = s16[n].x;
  o[1] = s16[n].y;
  o[2] = s16[n].z;
  o[3] = s16[n].w;
  o[4] = s8[n].x + s8[n].y;
  o[5] = s4[n];
  o[6] = late[n];
}

// Returns with a copy issued and never waited for: a launch error.
__global__ void unwaited(const float* __restrict__ in) {
  AK_SHARED_ARRAY(float4, s, [32]);
  ak_cp_async<16>(&s[threadIdx.x], in + 4 * threadIdx.x, 16);
  ak_cp_async_commit();
}

// A 16-byte copy from a source 4 bytes past 16-byte alignment: a launch error.
__global__ void misaligned(const float* __restrict__ in) {
  AK_SHARED_ARRAY(float4, s, [32]);
  ak_cp_async<16>(&s[threadIdx.x], in + 4 * threadIdx.x + 1, 16);
  ak_cp_async_wait_all();
}

// src-size 20 for a 16-byte copy: a launch error.
__global__ void bad_size(const float* __restrict__ in) {
  AK_SHARED_ARRAY(float4, s, [32]);
  ak_cp_async<16>(&s[threadIdx.x], in + 4 * threadIdx.x, 20);
  ak_cp_async_wait_all();
}

// Each thread waits for its own copy, then reads its neighbour's with no
// barrier in between: nothing orders the neighbour's copy before the read, and
// ThreadSanitizer must say so.
__global__ void race(const float* __restrict__ in, float* __restrict__ out) {
  AK_SHARED_ARRAY(float4, s, [kThreads]);
  const int t = static_cast<int>(threadIdx.x);
  ak_cp_async<16>(&s[t], in + 4 * t, 16);
  ak_cp_async_wait_all();
  out[t] = s[(t + 1) % kThreads].x;
}

// D = A * B (16 x 16 x 16, one warp, two m16n8k16 steps) from fragments loaded
// with ldmatrix out of shared memory, three ways: A with .x4; B two ways:
// from B^T (n rows, k contiguous) without .trans, the first n half with one .x2,
// the second with two .x1; and from B (k rows, n contiguous) with .x4.trans,
// both n halves at once. d holds the two 16 x 16 results. kWrongRows gives
// lanes 16-31 the A rows' first k half and lanes 0-15 the second, the kind of
// slip that must give a wrong product.
template <typename T, bool kWrongRows>
__global__ void ldmatrix_mma(const T* __restrict__ a, const T* __restrict__ b,
                             const T* __restrict__ b_t, float* __restrict__ d) {
  AK_SHARED_ARRAY(T, sa, [16][16]);
  AK_SHARED_ARRAY(T, sb, [16][16]);
  AK_SHARED_ARRAY(T, sbt, [16][16]);
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < 256; i += 32) {
    sa[i / 16][i % 16] = a[i];
    sb[i / 16][i % 16] = b[i];
    sbt[i / 16][i % 16] = b_t[i];
  }
  __syncthreads();
  const int k_half = (lane / 16) ^ (kWrongRows ? 1 : 0);
  uint32_t af[4];
  ak_ldmatrix<4>(af, &sa[lane % 16][8 * k_half]);
  // B^T: matrices (n 0-7, k 0-7), (n 0-7, k 8-15) for n half 0; .x1 per matrix for half 1.
  uint32_t bt0[2];
  ak_ldmatrix<2>(bt0, &sbt[lane % 8][8 * ((lane / 8) % 2)]);
  uint32_t bt1_lo[1], bt1_hi[1];
  ak_ldmatrix<1>(bt1_lo, &sbt[8 + lane % 8][0]);
  ak_ldmatrix<1>(bt1_hi, &sbt[8 + lane % 8][8]);
  // B: matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
  uint32_t bf[4];
  ak_ldmatrix<4, true>(bf, &sb[lane % 16][8 * (lane / 16)]);
  const uint32_t b_from_t[2][2] = {{bt0[0], bt0[1]}, {bt1_lo[0], bt1_hi[0]}};
  const uint32_t b_direct[2][2] = {{bf[0], bf[1]}, {bf[2], bf[3]}};
  const int g = lane / 4;
  const int t = lane % 4;
  for (int way = 0; way < 2; ++way) {
    for (int half = 0; half < 2; ++half) {
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const uint32_t(&bb)[2] = way == 0 ? b_from_t[half] : b_direct[half];
      ak_mma_m16n8k16<T>(acc, af, bb);
      float* out = d + way * 256;
      const int col = 8 * half + 2 * t;
      out[g * 16 + col] = acc[0];
      out[g * 16 + col + 1] = acc[1];
      out[(g + 8) * 16 + col] = acc[2];
      out[(g + 8) * 16 + col + 1] = acc[3];
    }
  }
}

// An ldmatrix row 8 bytes past 16-byte alignment: a launch error.
__global__ void ldmatrix_misaligned(float* __restrict__ out) {
  AK_SHARED_ARRAY(__half, s, [8][16]);
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < 128; i += 32) s[i / 16][i % 16] = __float2half(1.0f);
  __syncthreads();
  uint32_t r[1];
  ak_ldmatrix<1>(r, &s[lane % 8][4]);
  out[lane] = static_cast<float>(r[0]);
}

}  // namespace selftest::async_copy
