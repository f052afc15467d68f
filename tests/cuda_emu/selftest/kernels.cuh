// Toy kernels that exercise the CUDA emulator, written like the project's
// real kernels: only cuda_compat.h, shared memory through AK_SHARED_ARRAY /
// AK_DYNAMIC_SHARED, launches through AK_LAUNCH.
#pragma once

#include "cuda_compat.h"
#include "mma.cuh"

#include <cstdint>

namespace selftest {

inline constexpr unsigned kFull = 0xffffffffu;

// ---------------------------------------------------------------------------
// 1. Tiled matmul C[m][n] = A[m][k] * B[k][n] (row-major).
// kSkipLoadSync drops the barrier between loading the tiles and using them:
// the classic race the ThreadSanitizer build must report.
// ---------------------------------------------------------------------------
template <int kTile, bool kSkipLoadSync>
__global__ void matmul_tiled(const float* __restrict__ a, const float* __restrict__ b,
                             float* __restrict__ c, int m, int n, int k) {
  AK_SHARED_ARRAY(float, a_tile, [kTile][kTile]);
  AK_SHARED_ARRAY(float, b_tile, [kTile][kTile]);
  const int tx = static_cast<int>(threadIdx.x);
  const int ty = static_cast<int>(threadIdx.y);
  const int row = static_cast<int>(blockIdx.y) * kTile + ty;
  const int col = static_cast<int>(blockIdx.x) * kTile + tx;
  float acc = 0.0f;
  for (int t0 = 0; t0 < k; t0 += kTile) {
    a_tile[ty][tx] = (row < m && t0 + tx < k) ? a[row * k + t0 + tx] : 0.0f;
    b_tile[ty][tx] = (t0 + ty < k && col < n) ? b[(t0 + ty) * n + col] : 0.0f;
    if constexpr (!kSkipLoadSync) __syncthreads();
    for (int i = 0; i < kTile; ++i) acc += a_tile[ty][i] * b_tile[i][tx];
    __syncthreads();  // the tiles are overwritten by the next iteration
  }
  if (row < m && col < n) c[row * n + col] = acc;
}

template <bool kSkipLoadSync>
void matmul(const float* a, const float* b, float* c, int m, int n, int k, cudaStream_t stream) {
  constexpr int kTile = 16;
  auto kernel = &matmul_tiled<kTile, kSkipLoadSync>;
  const dim3 grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile);
  const dim3 block(kTile, kTile);
  AK_LAUNCH(kernel, grid, block, 0, stream)(a, b, c, m, n, k);
}

// ---------------------------------------------------------------------------
// 2. Block reduction: grid-stride partial sums, warp shuffles, one partial per
// warp in dynamic shared memory, block results combined with atomicAdd.
// ---------------------------------------------------------------------------
__global__ void block_sum(const float* __restrict__ x, int n, float* __restrict__ block_sums,
                          float* total, unsigned long long* count) {
  AK_DYNAMIC_SHARED(float, warp_sums);  // one float per warp
  const unsigned tid = threadIdx.x;
  const unsigned lane = tid % warpSize;
  const unsigned warp = tid / warpSize;
  const unsigned warps = (blockDim.x + warpSize - 1) / warpSize;
  float v = 0.0f;
  unsigned long long c = 0;
  for (unsigned i = blockIdx.x * blockDim.x + tid; i < static_cast<unsigned>(n);
       i += gridDim.x * blockDim.x) {
    v += x[i];
    ++c;
  }
  for (int offset = warpSize / 2; offset > 0; offset /= 2) v += __shfl_down_sync(kFull, v, offset);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < warps ? warp_sums[lane] : 0.0f;
    for (int mask = warpSize / 2; mask > 0; mask /= 2) s += __shfl_xor_sync(kFull, s, mask);
    if (lane == 0) {
      block_sums[blockIdx.x] = s;
      atomicAdd(total, s);
    }
  }
  atomicAdd(count, c);
}

inline void sum(const float* x, int n, float* block_sums, float* total, unsigned long long* count,
                int blocks, int threads, cudaStream_t stream) {
  const std::size_t smem = static_cast<std::size_t>((threads + 31) / 32) * sizeof(float);
  AK_LAUNCH(block_sum, blocks, threads, smem, stream)(x, n, block_sums, total, count);
}

// ---------------------------------------------------------------------------
// 3. Half and bfloat16: convert, store, load back.
// ---------------------------------------------------------------------------
__global__ void to_half_bf16(const float* __restrict__ in, __half* __restrict__ h,
                             __nv_bfloat16* __restrict__ b, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  h[i] = __float2half(in[i]);
  b[i] = __float2bfloat16(in[i]);
}

__global__ void from_half_bf16(const __half* __restrict__ h, const __nv_bfloat16* __restrict__ b,
                               float* __restrict__ out_h, float* __restrict__ out_b, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  out_h[i] = __half2float(__ldg(h + i)) * 2.0f;
  out_b[i] = __bfloat162float(__ldg(b + i)) * 2.0f;
}

// ---------------------------------------------------------------------------
// 4. Warp intrinsics: every thread records kWarpFields results.
// ---------------------------------------------------------------------------
inline constexpr int kWarpFields = 18;

__global__ void warp_ops(double* out) {
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % warpSize;
  double* o = out + tid * kWarpFields;
  o[0] = __shfl_sync(kFull, tid * 10, 3);
  o[1] = __shfl_sync(kFull, tid, 5, 8);
  o[2] = __shfl_up_sync(kFull, tid, 1);
  o[3] = __shfl_up_sync(kFull, tid, 2, 8);
  o[4] = __shfl_down_sync(kFull, tid, 2, 16);
  o[5] = __shfl_xor_sync(kFull, tid, 5);
  o[6] = __shfl_xor_sync(kFull, tid, 12, 8);
  o[7] = __ballot_sync(kFull, lane % 3 == 0);
  o[8] = __any_sync(kFull, lane == 7);
  o[9] = __all_sync(kFull, lane < 31);
  o[10] = __shfl_sync(kFull, tid * 0.5, 31);
  o[11] = static_cast<double>(__shfl_down_sync(kFull, static_cast<long long>(tid) << 40, 1));
  o[12] = __half2float(__shfl_xor_sync(kFull, __float2half(tid + 0.5f), 1));
  o[13] = __bfloat162float(__shfl_sync(kFull, __float2bfloat16(static_cast<float>(tid)), 0));
  o[14] = __reduce_add_sync(kFull, static_cast<unsigned>(lane));
  __syncwarp();
  o[15] = __activemask();
  o[16] = __shfl_up_sync(kFull, static_cast<unsigned>(tid) * 3u, 4);
  o[17] = __shfl_sync(kFull, static_cast<float>(tid) * 0.25f, lane ^ 1);
}

// A block of 48 threads: warp 1 has only 16 lanes. Full-mask intrinsics that
// stay within the existing lanes are fine; ballots see only existing lanes.
inline constexpr int kPartialFields = 4;

__global__ void warp_partial(unsigned* out) {
  const unsigned tid = threadIdx.x;
  unsigned* o = out + tid * kPartialFields;
  o[0] = __shfl_xor_sync(kFull, tid, 1);
  o[1] = __ballot_sync(kFull, 1);
  o[2] = __activemask();
  o[3] = __reduce_add_sync(kFull, tid % warpSize);
}

// ---------------------------------------------------------------------------
// 5. Atomics with contention from every thread.
// ---------------------------------------------------------------------------
struct AtomicResults {
  int imax, imin;
  unsigned umax;
  long long llmin;
  unsigned long long ullsum;
  int cas_target, cas_winners;
  unsigned inc_counter;
  float fsum;
  double dsum;
  __half hsum;
  int exch;
  unsigned bits_or;
};

__global__ void atomics(AtomicResults* r) {
  const int t = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicMax(&r->imax, (t * 37) % 101 - 50);
  atomicMin(&r->imin, (t * 37) % 101 - 50);
  atomicMax(&r->umax, static_cast<unsigned>(t) * 3u);
  atomicMin(&r->llmin, -static_cast<long long>(t) * 1000000000LL);
  atomicAdd(&r->ullsum, static_cast<unsigned long long>(t));
  if (atomicCAS(&r->cas_target, -1, t) == -1) atomicAdd(&r->cas_winners, 1);
  atomicInc(&r->inc_counter, 9u);
  atomicAdd(&r->fsum, 1.0f);
  atomicAdd(&r->dsum, 0.5);
  atomicAdd(&r->hsum, __float2half(1.0f));
  atomicExch(&r->exch, t);
  atomicOr(&r->bits_or, 1u << (t % 32));
}

// ---------------------------------------------------------------------------
// 6. Early exit: threads past `active` return at once; the rest use two
// barriers. Exited threads must drop out of the barriers (no hang, no error).
// ---------------------------------------------------------------------------
__global__ void early_exit_reverse(const int* __restrict__ in, int* __restrict__ out, int active) {
  AK_SHARED_ARRAY(int, s, [64]);
  const int tid = static_cast<int>(threadIdx.x);
  if (tid >= active) return;
  s[tid] = in[tid];
  __syncthreads();
  const int v = s[active - 1 - tid];
  __syncthreads();
  s[tid] = v * 2;
  __syncthreads();
  out[tid] = s[tid];
}

// ---------------------------------------------------------------------------
// 7. Predicate barriers.
// ---------------------------------------------------------------------------
__global__ void barrier_predicates(int* out) {
  const int tid = static_cast<int>(threadIdx.x);
  out[tid * 3 + 0] = __syncthreads_count(tid % 3 == 0);
  out[tid * 3 + 1] = __syncthreads_and(tid < 1000);
  out[tid * 3 + 2] = __syncthreads_or(tid == 5);
}

// ---------------------------------------------------------------------------
// 8. One tensor-core step D = A * B + C (mma.m16n8k16, one warp) through the
// kernels' wrapper (csrc/kernels/mma.cuh), fragments filled per the PTX ISA's
// layout from A (16 x 16, row-major) and B^T (8 x 16, row-major, i.e. B
// column-major). kWrongLayout swaps a[1] and a[2], the kind of slip the
// emulated mma must turn into wrong results.
// ---------------------------------------------------------------------------
template <typename T, bool kWrongLayout>
__global__ void mma_m16n8k16_tile(const T* __restrict__ a, const T* __restrict__ b_t,
                                  const float* __restrict__ c, float* __restrict__ d) {
  using alexnet_kernels::kernels::load_pair_b32;
  const int g = static_cast<int>(threadIdx.x) / 4;
  const int t = static_cast<int>(threadIdx.x) % 4;
  const std::uint32_t upper_rows = load_pair_b32(a + (g + 8) * 16 + 2 * t);
  const std::uint32_t upper_cols = load_pair_b32(a + g * 16 + 2 * t + 8);
  const std::uint32_t a_frag[4] = {load_pair_b32(a + g * 16 + 2 * t),
                                   kWrongLayout ? upper_cols : upper_rows,
                                   kWrongLayout ? upper_rows : upper_cols,
                                   load_pair_b32(a + (g + 8) * 16 + 2 * t + 8)};
  const std::uint32_t b_frag[2] = {load_pair_b32(b_t + g * 16 + 2 * t),
                                   load_pair_b32(b_t + g * 16 + 2 * t + 8)};
  const int at[4] = {g * 8 + 2 * t, g * 8 + 2 * t + 1, (g + 8) * 8 + 2 * t,
                     (g + 8) * 8 + 2 * t + 1};
  float acc[4] = {c[at[0]], c[at[1]], c[at[2]], c[at[3]]};
  ak_mma_m16n8k16<T>(acc, a_frag, b_frag);
  for (int i = 0; i < 4; ++i) d[at[i]] = acc[i];
}

// D = A * B + C (16x8x8, A row-major, B given as b_t[n][k]) with one
// mma.m16n8k8 TF32 step; kWrongLayout swaps the A registers a[1] and a[2].
template <bool kWrongLayout>
__global__ void mma_m16n8k8_tf32_tile(const float* __restrict__ a, const float* __restrict__ b_t,
                                      const float* __restrict__ c, float* __restrict__ d) {
  using alexnet_kernels::kernels::float_bits;
  using alexnet_kernels::kernels::to_tf32;
  const int g = static_cast<int>(threadIdx.x) / 4;
  const int t = static_cast<int>(threadIdx.x) % 4;
  const std::uint32_t upper_rows = float_bits(to_tf32(a[(g + 8) * 8 + t]));
  const std::uint32_t upper_cols = float_bits(to_tf32(a[g * 8 + t + 4]));
  const std::uint32_t a_frag[4] = {float_bits(to_tf32(a[g * 8 + t])),
                                   kWrongLayout ? upper_cols : upper_rows,
                                   kWrongLayout ? upper_rows : upper_cols,
                                   float_bits(to_tf32(a[(g + 8) * 8 + t + 4]))};
  const std::uint32_t b_frag[2] = {float_bits(to_tf32(b_t[g * 8 + t])),
                                   float_bits(to_tf32(b_t[g * 8 + t + 4]))};
  const int at[4] = {g * 8 + 2 * t, g * 8 + 2 * t + 1, (g + 8) * 8 + 2 * t,
                     (g + 8) * 8 + 2 * t + 1};
  float acc[4] = {c[at[0]], c[at[1]], c[at[2]], c[at[3]]};
  ak_mma_m16n8k8_tf32(acc, a_frag, b_frag);
  for (int i = 0; i < 4; ++i) d[at[i]] = acc[i];
}

}  // namespace selftest
