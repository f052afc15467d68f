// Dropout on the CPU: y = x * (keep ? scale : 0), one pass over flat memory,
// the keep bits generated on the fly by Philox4x32-10 (csrc/kernels/philox.cuh)
// and never stored, so the backward regenerates them instead of reading a mask.
//
// The time of eager dropout is its random number generation; here Philox runs
// for 16 (AVX-512) or 8 (AVX2) consecutive counters at once in SIMD lanes.
// GCC does not turn the rounds' 32x32 -> 64-bit products into single
// vpmuludq instructions by itself (it emits a full 64-bit multiply, three
// multiplies each), so the lanes use intrinsics, in functions compiled per
// instruction set and chosen once at run time. Multiplying by a selected
// factor, rather than selecting between x * scale and 0, keeps eager's
// results exactly, -0.0 and NaN included.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "cpu/allocation.h"
#include "cpu/vectorize.h"
#include "dropout.h"
#include "kernels/philox.cuh"

#if AK_CPU_HAS_ISA_VARIANTS
#define AK_DROPOUT_X86_SIMD 1
#include <immintrin.h>
#endif

namespace alexnet_kernels {
namespace {

template <typename Acc>
struct DropoutConstants {
  DropoutKey key;
  uint32_t threshold;
  Acc scale;
};

// Each lane engine writes words[4 * lane + i] = word i of counter group0 + lane
// for kLanes consecutive counters.
struct ScalarLanes {
  static constexpr int64_t kLanes = 4;
  static void philox_block(const DropoutKey& key, uint64_t group0, uint32_t* words) {
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      const philox::Words w = philox::dropout_words(key.seed, key.offset, group0 + lane);
      std::copy(w.w, w.w + 4, words + 4 * lane);
    }
  }
};

#ifdef AK_DROPOUT_X86_SIMD
// GCC 12 warns about the deliberately undefined pass-through operand inside
// its own shift and multiply intrinsics (fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// SIMD lanes for philox::philox4x32_10, which finds mulhilo below by
// argument-dependent lookup (hence a struct around the vector type).
template <typename V>
struct Simd {
  V v;
  friend Simd operator^(const Simd& a, const Simd& b) { return {a.v ^ b.v}; }
  friend Simd operator^(const Simd& a, uint32_t b) { return {a.v ^ b}; }
};
typedef uint32_t V16 __attribute__((vector_size(64)));
typedef uint32_t V8 __attribute__((vector_size(32)));
using U32x16 = Simd<V16>;
using U32x8 = Simd<V8>;

// Even lanes multiply in place; odd lanes are shifted down first. The halves
// are blended back into 32-bit lanes.
AK_TARGET_AVX512 inline void mulhilo(U32x16 a, uint32_t m, U32x16& hi, U32x16& lo) {
  const __m512i av = reinterpret_cast<__m512i>(a.v);
  const __m512i mv = _mm512_set1_epi32(static_cast<int>(m));
  const __m512i even = _mm512_mul_epu32(av, mv);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(av, 32), mv);
  hi = U32x16{(V16)_mm512_mask_blend_epi32(0x5555, odd, _mm512_srli_epi64(even, 32))};
  lo = U32x16{(V16)_mm512_mask_blend_epi32(0x5555, _mm512_slli_epi64(odd, 32), even)};
}

AK_TARGET_AVX2 inline void mulhilo(U32x8 a, uint32_t m, U32x8& hi, U32x8& lo) {
  const __m256i av = reinterpret_cast<__m256i>(a.v);
  const __m256i mv = _mm256_set1_epi32(static_cast<int>(m));
  const __m256i even = _mm256_mul_epu32(av, mv);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(av, 32), mv);
  hi = U32x8{(V8)_mm256_blend_epi32(odd, _mm256_srli_epi64(even, 32), 0x55)};
  lo = U32x8{(V8)_mm256_blend_epi32(_mm256_slli_epi64(odd, 32), even, 0x55)};
}

struct Avx512Lanes {
  static constexpr int64_t kLanes = 16;
  AK_TARGET_AVX512 static void philox_block(const DropoutKey& key, uint64_t group0,
                                            uint32_t* words) {
    const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i g_lo = _mm512_add_epi64(_mm512_set1_epi64(static_cast<int64_t>(group0)), lane);
    const __m512i g_hi = _mm512_add_epi64(_mm512_set1_epi64(static_cast<int64_t>(group0 + 8)),
                                          lane);
    // Low and high 32-bit halves of the 16 64-bit group indices.
    const __m512i take_low = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                               28, 30);
    const __m512i take_high = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25,
                                                27, 29, 31);
    const uint64_t call = key.offset / 4;
    U32x16 c0 = U32x16{(V16)_mm512_set1_epi32(static_cast<int>(call))};
    U32x16 c1 = U32x16{(V16)_mm512_set1_epi32(static_cast<int>(call >> 32))};
    U32x16 c2 = U32x16{(V16)_mm512_permutex2var_epi32(g_lo, take_low, g_hi)};
    U32x16 c3 = U32x16{(V16)_mm512_permutex2var_epi32(g_lo, take_high, g_hi)};
    philox::philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(key.seed),
                          static_cast<uint32_t>(key.seed >> 32));
    // 16 x 4 transpose: 32-bit, then 64-bit interleaves within 128-bit chunks
    // (chunk k of u_j = counter 4k + j), then a 4 x 4 transpose of chunks.
    const __m512i a = reinterpret_cast<__m512i>(c0.v), b = reinterpret_cast<__m512i>(c1.v);
    const __m512i c = reinterpret_cast<__m512i>(c2.v), d = reinterpret_cast<__m512i>(c3.v);
    const __m512i t0 = _mm512_unpacklo_epi32(a, b), t1 = _mm512_unpackhi_epi32(a, b);
    const __m512i t2 = _mm512_unpacklo_epi32(c, d), t3 = _mm512_unpackhi_epi32(c, d);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
    const __m512i v0 = _mm512_shuffle_i32x4(u0, u1, 0x44), v1 = _mm512_shuffle_i32x4(u2, u3, 0x44);
    const __m512i v2 = _mm512_shuffle_i32x4(u0, u1, 0xEE), v3 = _mm512_shuffle_i32x4(u2, u3, 0xEE);
    _mm512_storeu_si512(words, _mm512_shuffle_i32x4(v0, v1, 0x88));
    _mm512_storeu_si512(words + 16, _mm512_shuffle_i32x4(v0, v1, 0xDD));
    _mm512_storeu_si512(words + 32, _mm512_shuffle_i32x4(v2, v3, 0x88));
    _mm512_storeu_si512(words + 48, _mm512_shuffle_i32x4(v2, v3, 0xDD));
  }
};

struct Avx2Lanes {
  static constexpr int64_t kLanes = 8;
  AK_TARGET_AVX2 static void philox_block(const DropoutKey& key, uint64_t group0,
                                          uint32_t* words) {
    alignas(32) uint32_t lo[8], hi[8];
    for (int lane = 0; lane < 8; ++lane) {
      lo[lane] = static_cast<uint32_t>(group0 + lane);
      hi[lane] = static_cast<uint32_t>((group0 + lane) >> 32);
    }
    const uint64_t call = key.offset / 4;
    U32x8 c0 = U32x8{(V8)_mm256_set1_epi32(static_cast<int>(call))};
    U32x8 c1 = U32x8{(V8)_mm256_set1_epi32(static_cast<int>(call >> 32))};
    U32x8 c2 = U32x8{(V8)_mm256_load_si256(reinterpret_cast<const __m256i*>(lo))};
    U32x8 c3 = U32x8{(V8)_mm256_load_si256(reinterpret_cast<const __m256i*>(hi))};
    philox::philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(key.seed),
                          static_cast<uint32_t>(key.seed >> 32));
    // 8 x 4 transpose: interleaves within 128-bit halves (half k of u_j =
    // counter 4k + j), then the halves are paired.
    const __m256i a = reinterpret_cast<__m256i>(c0.v), b = reinterpret_cast<__m256i>(c1.v);
    const __m256i c = reinterpret_cast<__m256i>(c2.v), d = reinterpret_cast<__m256i>(c3.v);
    const __m256i t0 = _mm256_unpacklo_epi32(a, b), t1 = _mm256_unpackhi_epi32(a, b);
    const __m256i t2 = _mm256_unpacklo_epi32(c, d), t3 = _mm256_unpackhi_epi32(c, d);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    auto* out = reinterpret_cast<__m256i*>(words);
    _mm256_storeu_si256(out, _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256(out + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256(out + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
  }
};
#pragma GCC diagnostic pop
#endif  // AK_DROPOUT_X86_SIMD

template <typename T, typename Acc>
inline void apply_words(const T* __restrict__ x, T* __restrict__ y,
                        const uint32_t* __restrict__ words, int64_t count,
                        const DropoutConstants<Acc>& c) {
  // Locals, so the selection is a blend of registers rather than a load under a mask.
  const uint32_t threshold = c.threshold;
  const Acc scale = c.scale;
  for (int64_t i = 0; i < count; ++i) {
    const Acc factor = words[i] < threshold ? scale : Acc(0);
    y[i] = static_cast<T>(static_cast<Acc>(x[i]) * factor);
  }
}

// Elements [4 * group_begin, min(4 * group_end, numel)) of x and y. Compiled
// into each instruction-set entry point below (flatten), where the loop of
// apply_words is vectorised for that instruction set.
template <typename Lanes, typename T, typename Acc>
inline void dropout_range(const T* __restrict__ x, T* __restrict__ y, int64_t numel,
                          int64_t group_begin, int64_t group_end,
                          const DropoutConstants<Acc>& c) {
  constexpr int64_t kBlockElements = 4 * Lanes::kLanes;
  alignas(64) uint32_t words[kBlockElements];
  for (int64_t g = group_begin; g < group_end; g += Lanes::kLanes) {
    const int64_t first = 4 * g;
    Lanes::philox_block(c.key, static_cast<uint64_t>(g), words);
    if (numel - first >= kBlockElements) {
      apply_words(x + first, y + first, words, kBlockElements, c);
    } else {
      apply_words(x + first, y + first, words, numel - first, c);
    }
  }
}

template <typename T, typename Acc>
using DropoutRangeFn = void (*)(const T*, T*, int64_t, int64_t, int64_t,
                                const DropoutConstants<Acc>&);

template <typename T, typename Acc>
__attribute__((flatten)) void dropout_range_scalar(const T* x, T* y, int64_t numel, int64_t begin,
                                                   int64_t end, const DropoutConstants<Acc>& c) {
  dropout_range<ScalarLanes>(x, y, numel, begin, end, c);
}

#ifdef AK_DROPOUT_X86_SIMD
template <typename T, typename Acc>
AK_TARGET_AVX512 __attribute__((flatten)) void dropout_range_avx512(
    const T* x, T* y, int64_t numel, int64_t begin, int64_t end, const DropoutConstants<Acc>& c) {
  dropout_range<Avx512Lanes>(x, y, numel, begin, end, c);
}

template <typename T, typename Acc>
AK_TARGET_AVX2 __attribute__((flatten)) void dropout_range_avx2(
    const T* x, T* y, int64_t numel, int64_t begin, int64_t end, const DropoutConstants<Acc>& c) {
  dropout_range<Avx2Lanes>(x, y, numel, begin, end, c);
}
#endif

// The entry point for the instruction set the kernels run with
// (cpu::cpu_capability()), and its counters per block.
template <typename T, typename Acc>
std::pair<DropoutRangeFn<T, Acc>, int64_t> select_dropout_range() {
#ifdef AK_DROPOUT_X86_SIMD
  switch (cpu::cpu_capability()) {
    case cpu::CpuCapability::kAvx512:
      return {&dropout_range_avx512<T, Acc>, Avx512Lanes::kLanes};
    case cpu::CpuCapability::kAvx2:
      return {&dropout_range_avx2<T, Acc>, Avx2Lanes::kLanes};
    case cpu::CpuCapability::kDefault:
      break;
  }
#endif
  return {&dropout_range_scalar<T, Acc>, ScalarLanes::kLanes};
}

at::Tensor dropout_cpu(const at::Tensor& x_in, const at::Tensor& seed_offset, double p) {
  check_dropout_arguments(x_in, seed_offset, p);
  at::Tensor y = cpu::empty_output_like(x_in);
  const at::Tensor x = dropout_input_like(x_in, y);
  const int64_t numel = x.numel();
  if (numel == 0) {
    return y;
  }
  const DropoutKey key = read_dropout_key(seed_offset);
  const uint32_t threshold = dropout_threshold(p);
  const int64_t groups = (numel + 3) / 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_cpu", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const DropoutConstants<Acc> c{key, threshold, dropout_scale<Acc>(p)};
    const auto [range_fn, lanes] = select_dropout_range<scalar_t, Acc>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    // Work items are whole blocks of `lanes` counters, so only the tensor's
    // last block is partial.
    const int64_t blocks = (groups + lanes - 1) / lanes;
    at::parallel_for(0, blocks, 1024, [&](int64_t begin, int64_t end) {
      range_fn(xp, yp, numel, begin * lanes, std::min(end * lanes, groups), c);
    });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("dropout", &dropout_cpu);
}

}  // namespace alexnet_kernels
