// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11), the counter-based generator of Random123, cuRAND and Triton's
// tl.philox. Written once for the CPU kernels and the CUDA kernels: this header
// includes neither PyTorch nor cuda_compat.h, so the CPU build uses it as plain
// C++ and nvcc sees the same functions as __host__ __device__.
//
// Dropout convention (every backend produces the same mask bit for bit):
//   key     = (seed & 0xffffffff, seed >> 32)                      64-bit seed
//   counter = (offset / 4 & 0xffffffff, offset / 4 >> 32,
//              group & 0xffffffff, group >> 32)
//   group   = element_index / 4, element_index = position of the element in
//             the tensor's flattened memory order; output word i of the call
//             decides element 4 * group + i.
//   keep iff word < threshold, threshold = min(floor((1 - p) * 2^32), 2^32 - 1),
//   computed once on the host in double; p = 0 and p = 1 never reach a kernel.
// This is cuRAND's layout as PyTorch's CUDA generators use it: the group is the
// subsequence (counter words 2-3) and `offset`, a multiple of 4 counted in
// 32-bit outputs, addresses counter words 0-1. Each group draws exactly one
// call, so a dropout reserves 4 of the generator's offset, and its counters can
// never coincide with those of another op drawing from the same generator.
// Deciding on the raw 32-bit word (no conversion to float) keeps the decision
// exact on every backend. Triton reproduces it with
// tl.philox(seed, offset_lo, offset_hi, group_lo, group_hi) (offset / 4 split).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define AK_PHILOX_INLINE __host__ __device__ __forceinline__
#else
// Plain inline on the host: the rounds are also instantiated for SIMD lane
// types whose mulhilo needs an instruction-set target; forcing them inline
// into a function without that target would be an error.
#define AK_PHILOX_INLINE inline
#endif

namespace alexnet_kernels::philox {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1
constexpr int kRounds = 10;

// High and low halves of the 64-bit product a * m.
AK_PHILOX_INLINE void mulhilo(uint32_t a, uint32_t m, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * m;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

// Philox4x32-10 on counter (c0..c3), replaced by the output, and key (k0, k1),
// bumped by the Weyl constants between rounds as in Random123. U is uint32_t,
// or a SIMD vector of independent lanes (the CPU kernel) that has ^ with a
// uint32_t and a mulhilo(U, uint32_t, U&, U&) overload.
template <typename U>
AK_PHILOX_INLINE void philox4x32_10(U& c0, U& c1, U& c2, U& c3, uint32_t k0, uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < kRounds; ++round) {
    U hi0, lo0, hi1, lo1;
    mulhilo(c0, kMul0, hi0, lo0);
    mulhilo(c2, kMul1, hi1, lo1);
    c0 = hi1 ^ c1 ^ k0;
    c2 = hi0 ^ c3 ^ k1;
    c1 = lo1;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
}

struct Words {
  uint32_t w[4];
};

// The four words that decide elements 4 * group .. 4 * group + 3.
AK_PHILOX_INLINE Words dropout_words(uint64_t seed, uint64_t offset, uint64_t group) {
  const uint64_t call = offset / 4;
  Words out{{static_cast<uint32_t>(call), static_cast<uint32_t>(call >> 32),
             static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32)}};
  philox4x32_10(out.w[0], out.w[1], out.w[2], out.w[3], static_cast<uint32_t>(seed),
                static_cast<uint32_t>(seed >> 32));
  return out;
}

}  // namespace alexnet_kernels::philox
