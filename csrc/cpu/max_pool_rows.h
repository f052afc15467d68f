// The innermost loops of the NCHW max-pool kernels (csrc/cpu/max_pool.cpp):
// one output row's running maximum over its taps, and one input row's sum of
// the gradients routed to it. Each has a portable version and, for float,
// AVX-512 and AVX2 versions that keep a vector of results in registers across
// all taps (written with intrinsics: GCC 12 either leaves such a nest scalar
// or, for some vector widths, vectorises it wrongly).
//
// All versions visit taps in the same order, so they give identical results.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/vectorize.h"

#if AK_CPU_HAS_ISA_VARIANTS
#include <immintrin.h>
#endif

namespace alexnet_kernels::cpu {

// Row lengths handed to these functions are multiples of this many entries.
constexpr int kRowChunk = 16;

// Candidates of one window tap for a whole output row: values[ow], and the
// tap's offset kh * kernel_w + kw inside the window.
template <typename Acc, typename Index>
struct TapRow {
  const Acc* values;
  Index tap;
};

// Gradients of one output row for one tap: the entries whose argmax equals
// `tap` add grads[i] to input entry i.
template <typename Acc, typename Index>
struct GradientRow {
  const Acc* grads;
  const Index* argmax;
  Index tap;
};

// best[i] = max over taps of taps[t].values[i] (NaN wins, first maximum wins
// ties), best_tap[i] = its tap, starting from (-inf, first_tap[i]). Versions
// built WithArgmax = false compute best alone and never touch first_tap or
// best_tap (which may then be null); best is the same bit for bit.
template <typename Acc, typename Index>
using RowMaxFn = void (*)(const TapRow<Acc, Index>* taps, int count, int64_t length,
                          const Index* first_tap, Acc* best, Index* best_tap);

// out[i] = sum over rows r (in order) of rows[r].grads[i] where rows[r].argmax[i] == rows[r].tap.
template <typename Acc, typename Index>
using RowGatherFn = void (*)(const GradientRow<Acc, Index>* rows, int count, int64_t length,
                             Acc* out);

template <typename Acc, typename Index, bool WithArgmax>
void row_max_portable(const TapRow<Acc, Index>* taps, int count, int64_t length,
                      const Index* first_tap, Acc* best, Index* best_tap) {
  for (int64_t i = 0; i < length; ++i) {
    Acc value = -std::numeric_limits<Acc>::infinity();
    Index tap = 0;
    if constexpr (WithArgmax) tap = first_tap[i];
    for (int t = 0; t < count; ++t) {
      const Acc v = taps[t].values[i];
      if (v > value || v != v) {
        value = v;
        if constexpr (WithArgmax) tap = taps[t].tap;
      }
    }
    best[i] = value;
    if constexpr (WithArgmax) best_tap[i] = tap;
  }
}

template <typename Acc, typename Index>
void row_gather_portable(const GradientRow<Acc, Index>* rows, int count, int64_t length,
                         Acc* out) {
  for (int64_t i = 0; i < length; ++i) {
    Acc sum = 0;
    for (int r = 0; r < count; ++r) {
      if (rows[r].argmax[i] == rows[r].tap) {
        sum += rows[r].grads[i];
      }
    }
    out[i] = sum;
  }
}

#if AK_CPU_HAS_ISA_VARIANTS

template <bool WithArgmax>
AK_TARGET_AVX512 inline void row_max_avx512(const TapRow<float, int32_t>* taps, int count,
                                            int64_t length, const int32_t* first_tap, float* best,
                                            int32_t* best_tap) {
  for (int64_t i = 0; i < length; i += 16) {
    __m512 value = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __m512i tap = _mm512_setzero_si512();
    if constexpr (WithArgmax) tap = _mm512_loadu_si512(first_tap + i);
    for (int t = 0; t < count; ++t) {
      const __m512 v = _mm512_loadu_ps(taps[t].values + i);
      const __mmask16 take =
          _mm512_cmp_ps_mask(v, value, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      value = _mm512_mask_mov_ps(value, take, v);
      if constexpr (WithArgmax) {
        tap = _mm512_mask_mov_epi32(tap, take, _mm512_set1_epi32(taps[t].tap));
      }
    }
    _mm512_storeu_ps(best + i, value);
    if constexpr (WithArgmax) _mm512_storeu_si512(best_tap + i, tap);
  }
}

template <bool WithArgmax>
AK_TARGET_AVX2 inline void row_max_avx2(const TapRow<float, int32_t>* taps, int count,
                                        int64_t length, const int32_t* first_tap, float* best,
                                        int32_t* best_tap) {
  for (int64_t i = 0; i < length; i += 8) {
    __m256 value = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 tap = _mm256_setzero_ps();
    if constexpr (WithArgmax) {
      tap = _mm256_castsi256_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(first_tap + i)));
    }
    for (int t = 0; t < count; ++t) {
      const __m256 v = _mm256_loadu_ps(taps[t].values + i);
      const __m256 take =
          _mm256_or_ps(_mm256_cmp_ps(v, value, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      value = _mm256_blendv_ps(value, v, take);
      if constexpr (WithArgmax) {
        tap = _mm256_blendv_ps(tap, _mm256_castsi256_ps(_mm256_set1_epi32(taps[t].tap)), take);
      }
    }
    _mm256_storeu_ps(best + i, value);
    if constexpr (WithArgmax) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(best_tap + i), _mm256_castps_si256(tap));
    }
  }
}

AK_TARGET_AVX512 inline void row_gather_avx512(const GradientRow<float, int32_t>* rows, int count,
                                               int64_t length, float* out) {
  for (int64_t i = 0; i < length; i += 16) {
    __m512 sum = _mm512_setzero_ps();
    for (int r = 0; r < count; ++r) {
      const __mmask16 hit = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(rows[r].argmax + i),
                                                    _mm512_set1_epi32(rows[r].tap));
      sum = _mm512_mask_add_ps(sum, hit, sum, _mm512_loadu_ps(rows[r].grads + i));
    }
    _mm512_storeu_ps(out + i, sum);
  }
}

AK_TARGET_AVX2 inline void row_gather_avx2(const GradientRow<float, int32_t>* rows, int count,
                                           int64_t length, float* out) {
  for (int64_t i = 0; i < length; i += 8) {
    __m256 sum = _mm256_setzero_ps();
    for (int r = 0; r < count; ++r) {
      const __m256i argmax =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r].argmax + i));
      const __m256 hit =
          _mm256_castsi256_ps(_mm256_cmpeq_epi32(argmax, _mm256_set1_epi32(rows[r].tap)));
      // Lanes of other taps add +0.0 (NaN and inf gradients included), which
      // changes no sum: sums start at +0.0 and never become -0.0.
      sum = _mm256_add_ps(sum, _mm256_and_ps(hit, _mm256_loadu_ps(rows[r].grads + i)));
    }
    _mm256_storeu_ps(out + i, sum);
  }
}

#endif  // AK_CPU_HAS_ISA_VARIANTS

// The versions for the instruction set the kernels run with.
template <typename Acc, typename Index, bool WithArgmax>
RowMaxFn<Acc, Index> select_row_max() {
#if AK_CPU_HAS_ISA_VARIANTS
  if constexpr (std::is_same_v<Acc, float> && std::is_same_v<Index, int32_t>) {
    switch (cpu_capability()) {
      case CpuCapability::kAvx512:
        return &row_max_avx512<WithArgmax>;
      case CpuCapability::kAvx2:
        return &row_max_avx2<WithArgmax>;
      case CpuCapability::kDefault:
        break;
    }
  }
#endif
  return &row_max_portable<Acc, Index, WithArgmax>;
}

template <typename Acc, typename Index>
RowGatherFn<Acc, Index> select_row_gather() {
#if AK_CPU_HAS_ISA_VARIANTS
  if constexpr (std::is_same_v<Acc, float> && std::is_same_v<Index, int32_t>) {
    switch (cpu_capability()) {
      case CpuCapability::kAvx512:
        return &row_gather_avx512;
      case CpuCapability::kAvx2:
        return &row_gather_avx2;
      case CpuCapability::kDefault:
        break;
    }
  }
#endif
  return &row_gather_portable<Acc, Index>;
}

}  // namespace alexnet_kernels::cpu
