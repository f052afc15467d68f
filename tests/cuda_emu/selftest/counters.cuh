// Kernels with a known memory access pattern, for the self-tests of the
// emulator's efficiency counters (emu_counters.h). Each kernel's comment
// derives, from its access pattern, the numbers tests/test_cuda_emu.py
// expects the counters to report. Global buffers are 128-byte aligned (the
// driver allocates them so), floats are 4 bytes, a sector is 32 bytes, shared
// memory has 32 banks of 4 bytes.
#pragma once

#include "cuda_compat.h"
#include "mma.cuh"

#include <cstdint>

namespace selftest::counters {

// One block of 64 threads (two warps), thread t copies in[t] to out[t].
// Per warp: 32 consecutive floats = 128 bytes = 4 sectors, the minimum.
// Load site: 2 requests, 8 sectors, 8 ideal; DRAM bytes: 64 * 4 = 256.
// Store site: the same.
__global__ void coalesced(const float* __restrict__ in, float* __restrict__ out) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  ak_st(out + t, ak_ld(in + t) * 2.0f);
}

// One warp, lane l reads in[32 l]: 32 floats 128 bytes apart, each in its own
// sector. Load: 1 request, 32 sectors, ideal ceil(128 / 32) = 4 (12.5 %
// coalescing), DRAM bytes 32 * 32 = 1024. Store out[l]: 4 sectors of 4.
__global__ void strided(const float* __restrict__ in, float* __restrict__ out) {
  const unsigned lane = threadIdx.x;
  ak_st(out + lane, ak_ld(in + 32 * lane));
}

// One warp; every lane reads in[0] (global) and s[0] (shared) after lane 0
// stored it. Global load: 1 request, 1 sector, 1 ideal (4 distinct bytes).
// Shared store: 1 request by 1 lane, 1 wavefront. Shared load: all 32 lanes
// read one word, a broadcast: 1 wavefront, 1 ideal. One barrier.
__global__ void broadcast(const float* __restrict__ in, float* __restrict__ out) {
  AK_SHARED_ARRAY(float, s, [32]);
  const unsigned lane = threadIdx.x;
  const float v = ak_ld(in);
  if (lane == 0) ak_st(&s[0], v);
  __syncthreads();
  ak_st(out + lane, ak_ld(&s[0]) + v);
}

// One warp and a 32 x (32 + kPad) float tile. Lane l stores tile[r][l] for
// r = 0..31: 32 requests, each 32 consecutive words in 32 banks, 1 wavefront
// each (32 wavefronts, 32 ideal). After the barrier lane l reads the column
// tile[l][0], word l * (32 + kPad):
//   kPad = 0: every word in bank 0, 32 distinct words -> 32 wavefronts, 1 ideal;
//   kPad = 1: word 33 l is in bank l % 32, all distinct -> 1 wavefront, 1 ideal.
// One barrier per block.
template <int kPad>
__global__ void column_read(float* __restrict__ out) {
  AK_SHARED_ARRAY(float, tile, [32][32 + kPad]);
  const unsigned lane = threadIdx.x;
  for (int r = 0; r < 32; ++r) ak_st(&tile[r][lane], static_cast<float>(r * 32 + lane));
  __syncthreads();
  ak_st(out + lane, ak_ld(&tile[lane][0]));
}

// One warp, 16-byte and 8-byte accesses; dynamic shared memory of 64 float4.
//   global float4 load in4[l]: 512 bytes -> 16 sectors, 16 ideal;
//   shared float4 stores s4[l] and s4[l + 32]: 2 requests, each four phases of
//     8 lanes covering 32 consecutive words -> 4 wavefronts each (8 in all),
//     ideal ceil(128 / 32) = 4 each (8);
//   shared float4 load s4[2 l] (after the barrier): in each quarter-warp phase
//     lanes j = 0..7 start at word 8 j + 64 p, i.e. banks 8 j % 32 .. +3: lanes
//     j and j + 4 share their four banks -> 2 wavefronts per phase, 8 in all;
//     ideal 128 distinct words / 32 = 4;
//   shared float2 load s2[l]: two half-warp phases of 16 lanes x 2 consecutive
//     words = 32 banks -> 1 wavefront each, 2 in all; ideal 64 / 32 = 2;
//   global float4 store out4[l]: 16 sectors, 16 ideal.
// One barrier.
__global__ void vectors(const float4* __restrict__ in4, float4* __restrict__ out4) {
  AK_DYNAMIC_SHARED(float4, s4);
  const unsigned lane = threadIdx.x;
  const float4 v = ak_ld(in4 + lane);
  ak_st(s4 + lane, v);
  ak_st(s4 + lane + 32, v);
  __syncthreads();
  const float4 w = ak_ld(s4 + 2 * lane);
  const float2 u = ak_ld(reinterpret_cast<const float2*>(s4) + lane);
  ak_st(out4 + lane, make_float4(w.x + u.x, w.y + u.y, w.z, w.w));
}

// One warp, divergent and lane-dependent code.
//   lanes 0-15 read in[l] at one site, lanes 16-31 in[64 + l] at another:
//     each site 1 request of 16 lanes, 64 bytes -> 2 sectors, 2 ideal;
//   a loop in which lane l runs l % 3 + 1 iterations reading in[32 i + l] at
//   one site: the k-th iteration of the lanes still looping is request k:
//     k = 0: 32 lanes, in[0..31]         -> 4 sectors, 4 ideal;
//     k = 1: 21 lanes (l % 3 >= 1), within in[32..63], each 8-lane sector has
//            some -> 4 sectors, ideal ceil(84 / 32) = 3;
//     k = 2: 10 lanes (l % 3 == 2) 2, 5, ..., 29 in in[64..95], each sector has
//            some -> 4 sectors, ideal ceil(40 / 32) = 2;
//     site: 3 requests, 63 lane accesses, 12 sectors, 9 ideal.
__global__ void divergent(const float* __restrict__ in, float* __restrict__ out) {
  const unsigned lane = threadIdx.x;
  float acc = 0.0f;
  if (lane < 16) {
    acc = ak_ld(in + lane);
  } else {
    acc = ak_ld(in + 64 + lane);
  }
  for (unsigned i = 0; i < lane % 3 + 1; ++i) acc += ak_ld(in + 32 * i + lane);
  out[lane] = acc;  // a plain store: not counted
}

// A 20 x 8 x 32 GEMM tile on mma.m16n8k16 by one warp: M pads to 2 steps of
// 16, N is 1 step, K 2 steps -> 4 instructions of 2048 multiply-adds, 8192
// against the 20 * 8 * 32 = 5120 the GEMM needs (62.5 % useful). The
// fragments are zero: only the count matters here.
template <typename T>
__global__ void mma_padded(float* __restrict__ out) {
  const std::uint32_t a[4] = {0, 0, 0, 0};
  const std::uint32_t b[2] = {0, 0};
  float acc[4] = {0, 0, 0, 0};
  for (int m = 0; m < 20; m += 16) {
    for (int k = 0; k < 32; k += 16) ak_mma_m16n8k16<T>(acc, a, b);
  }
  out[threadIdx.x] = acc[0];
}

// A 16 x 8 x 12 tile on the TF32 mma.m16n8k8: K pads to 2 steps -> 2
// instructions of 1024 multiply-adds, 2048 against 16 * 8 * 12 = 1536.
__global__ void mma_tf32_padded(float* __restrict__ out) {
  const std::uint32_t a[4] = {0, 0, 0, 0};
  const std::uint32_t b[2] = {0, 0};
  float acc[4] = {0, 0, 0, 0};
  for (int k = 0; k < 12; k += 8) ak_mma_m16n8k8_tf32(acc, a, b);
  out[threadIdx.x] = acc[0];
}

// One warp, lane l issues one 16-byte cp.async of in[4l..4l+3] with src-size
// 16 for l < 16 and 0 (all zero-fill) for the others. Global load site: 1
// request of 32 lane accesses reading 16 x 16 = 256 contiguous bytes: 8
// sectors, 8 ideal; DRAM 256 bytes (the zero-filled lanes read nothing).
// Shared store site: 32 x 16 bytes, four phases of 8 lanes each writing 128
// consecutive bytes, 1 wavefront each: 4, ideal ceil(128 words / 32) = 4.
__global__ void cp_async_zero_fill(const float* __restrict__ in) {
  AK_SHARED_ARRAY(float4, s, [32]);
  const unsigned lane = threadIdx.x;
  ak_cp_async<16>(&s[lane], in + 4 * lane, lane < 16 ? 16 : 0);
  ak_cp_async_wait_all();
}

// One warp, ldmatrix.x4 of rows 0..31 (lane l gives row l) of a 32 x 64 bf16
// tile, 128 bytes per row, the 16-byte chunk c of row r stored at chunk
// c ^ (r % 8) when kSwizzled. Each phase of 8 lanes (one 8 x 8 matrix) reads
// chunk 0 of 8 rows: unswizzled the same 4 banks of each row, 8-way
// conflicting: 8 wavefronts per phase, 32 in all; swizzled, 8 distinct chunks =
// all 32 banks: 1 per phase, 4 in all. Ideal ceil(128 words / 32) = 4.
template <bool kSwizzled>
__global__ void ldmatrix_rows(float* __restrict__ out) {
  AK_SHARED_ARRAY(__nv_bfloat16, tile, [32][64]);
  const unsigned lane = threadIdx.x;
  const unsigned chunk = kSwizzled ? (0u ^ (lane % 8)) : 0u;
  std::uint32_t r[4];
  ak_ldmatrix<4>(r, &tile[lane][8 * chunk]);  // the tile is poison: only the count matters
  out[lane] = static_cast<float>(r[0] & 1u);
}

}  // namespace selftest::counters
