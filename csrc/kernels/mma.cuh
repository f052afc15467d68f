// Warp-wide tensor-core steps, D = A * B + D with fp32 accumulators: for
// fp16 / bf16 operands PTX mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}
// (below), for fp32 operands rounded to TF32 mma.m16n8k8 (ak_mma_m16n8k8_tf32).
//
// Fragment layout of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16
// with floating point type"), g = lane / 4, t = lane % 4; each 32-bit register holds two
// consecutive elements along k, the lower-indexed one in the low 16 bits:
//   a[0] = A[g][2t, 2t+1]      a[1] = A[g+8][2t, 2t+1]
//   a[2] = A[g][2t+8, 2t+9]    a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]      b[1] = B[2t+8, 2t+9][g]
//   acc  = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]
//
// Under AK_CUDA_EMULATION the emulator (tests/cuda_emu/emu_device.h) defines
// ak_mma_m16n8k16, ak_mma_m16n8k8_tf32 and ak_ldmatrix itself: it exchanges the lanes'
// registers and applies each layout, so a kernel that fills its fragments wrongly
// computes wrong results in the tests, as it would on the GPU.
#pragma once

#include "common.cuh"

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace alexnet_kernels::kernels {

template <typename T>
inline constexpr bool kIsHalfType =
    std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// Two consecutive 16-bit elements as one 32-bit fragment register; `p` is
// 4-byte aligned.
template <typename T>
AK_DEVICE_INLINE uint32_t load_pair_b32(const T* p) {
  static_assert(sizeof(T) == 2, "fragment registers pack two 16-bit elements");
  return ak_ld_as<uint32_t>(p);
}

// fp32 rounded to TF32 (10 mantissa bits) to nearest, ties away from zero, as
// cvt.rna.tf32.f32 does; kept in fp32's format with the low 13 bits zero.
// mma's TF32 path would otherwise just drop those bits (truncate).
AK_DEVICE_INLINE float to_tf32(float x) {
#if defined(__CUDACC__)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t bits;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(bits) : "f"(x));
  return __uint_as_float(bits);
#else
  __trap();
  return x;
#endif
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u) {
    // inf stays inf; NaN becomes a quiet NaN that keeps a high mantissa bit
    bits = (bits & 0x007fffffu) != 0 ? (bits | 0x00400000u) : bits;
  } else {
    bits += 0x1000u;  // half a TF32 ulp: the magnitude rounds, ties away from zero
  }
  bits &= 0xffffe000u;
  float rounded;
  std::memcpy(&rounded, &bits, sizeof(rounded));
  return rounded;
#endif
}

// The bits of an fp32 (TF32-rounded) value as a fragment register.
AK_DEVICE_INLINE uint32_t float_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}

}  // namespace alexnet_kernels::kernels

#if defined(__CUDACC__)

// One m16n8 mma.sync: the fp32 accumulators acc[4] in and out, A in a[4] and B
// in b[2] registers; every shape and type used here has these operands.
#define AK_MMA_SYNC_M16N8(opcode, acc, a, b)                                    \
  asm volatile(opcode " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "        \
                      "{%0, %1, %2, %3};\n"                                     \
               : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])         \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))

// acc += A * B for one 16x8x16 step of the calling warp (all 32 lanes).
// mma.m16n8k16 needs sm_80; the host launchers refuse half types below it.
template <typename T>
__device__ __forceinline__ void ak_mma_m16n8k16(float (&acc)[4], const uint32_t (&a)[4],
                                                const uint32_t (&b)[2]) {
  static_assert(alexnet_kernels::kernels::kIsHalfType<T>, "fp16 or bf16 operands only");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>) {
    AK_MMA_SYNC_M16N8("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", acc, a, b);
  } else {
    AK_MMA_SYNC_M16N8("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", acc, a, b);
  }
#else
  __trap();
#endif
}

// acc += A * B for one 16x8x8 step of the calling warp with TF32 operands
// (fp32 bit patterns; the tensor cores read their top 19 bits):
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, sm_80 or newer. Fragments
// (PTX ISA, "Matrix Fragments for mma.m16n8k8" with .tf32), one element per register:
//   a[0] = A[g][t]    a[1] = A[g+8][t]    a[2] = A[g][t+4]    a[3] = A[g+8][t+4]
//   b[0] = B[t][g]    b[1] = B[t+4][g]
//   acc  as for m16n8k16
__device__ __forceinline__ void ak_mma_m16n8k8_tf32(float (&acc)[4], const uint32_t (&a)[4],
                                                    const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  AK_MMA_SYNC_M16N8("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", acc, a, b);
#else
  __trap();
#endif
}

// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16 for the calling warp:
// lanes 8i..8i+7 give the 16-byte aligned rows of 8x8 matrix i (eight 16-bit
// elements each), and lane 4g + t receives in r[i] its elements (g, 2t), (g, 2t + 1)
// (.trans: (2t, g), (2t + 1, g)), the lower-indexed in the low half: exactly
// the A / B fragment registers of mma.m16n8k16 above. sm_75+.
template <int kMatrices, bool kTrans = false>
__device__ __forceinline__ void ak_ldmatrix(uint32_t (&r)[kMatrices], const void* smem_row) {
  static_assert(kMatrices == 1 || kMatrices == 2 || kMatrices == 4, "ldmatrix .x1, .x2 or .x4");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  const unsigned row = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  if constexpr (kMatrices == 1) {
    if constexpr (kTrans) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                   : "=r"(r[0]) : "r"(row));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                   : "=r"(r[0]) : "r"(row));
    }
  } else if constexpr (kMatrices == 2) {
    if constexpr (kTrans) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                   : "=r"(r[0]), "=r"(r[1]) : "r"(row));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                   : "=r"(r[0]), "=r"(r[1]) : "r"(row));
    }
  } else {
    if constexpr (kTrans) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(row));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(row));
    }
  }
#else
  __trap();
#endif
}

#endif  // __CUDACC__
