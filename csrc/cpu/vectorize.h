// Instruction-set selection for the CPU kernels.
//
// The extension is built without -march so that one binary runs on any x86-64.
// Each hot loop nest is written once as a forced-inline function and compiled
// three times, inside wrappers targeting AVX-512, AVX2+FMA and baseline
// x86-64; `run_with_cpu_capability` calls the widest one the CPU supports.
//
// Unlike GCC's automatic function multiversioning (target_clones), the choice
// can be forced, so the tests run every variant on one machine: set
// ALEXNET_KERNELS_CPU_CAPABILITY=default|avx2|avx512 before the library loads,
// or call alexnet_kernels._C.set_cpu_capability(). That matters: GCC 12
// vectorises some loops wrongly for one ISA only (see csrc/cpu/max_pool.cpp).
#pragma once

#include <string>

#if defined(__GNUC__) || defined(__clang__)
#define AK_CPU_INLINE inline __attribute__((always_inline))
// For lambdas: `[&]() AK_CPU_INLINE_LAMBDA { ... }`.
#define AK_CPU_INLINE_LAMBDA __attribute__((always_inline))
#else
#define AK_CPU_INLINE inline
#define AK_CPU_INLINE_LAMBDA
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define AK_CPU_HAS_ISA_VARIANTS 1
#define AK_CPU_NOINLINE __attribute__((noinline))
#define AK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define AK_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define AK_CPU_HAS_ISA_VARIANTS 0
#endif

namespace alexnet_kernels::cpu {

enum class CpuCapability { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest variant this CPU can run.
CpuCapability detected_cpu_capability();
// The variant the kernels use: the detected one unless forced lower.
CpuCapability cpu_capability();
const char* cpu_capability_name(CpuCapability capability);
// Forces a variant ("default", "avx2", "avx512"); throws if the CPU lacks it.
void set_cpu_capability(const std::string& name);

#if AK_CPU_HAS_ISA_VARIANTS
template <typename Fn>
AK_TARGET_AVX512 AK_CPU_NOINLINE void run_avx512(const Fn& fn) {
  fn();
}
template <typename Fn>
AK_TARGET_AVX2 AK_CPU_NOINLINE void run_avx2(const Fn& fn) {
  fn();
}
template <typename Fn>
AK_CPU_NOINLINE void run_baseline(const Fn& fn) {
  fn();
}
#endif

// Runs `fn` (a lambda marked AK_CPU_INLINE_LAMBDA whose loops call only
// AK_CPU_INLINE functions) compiled for the selected instruction set.
template <typename Fn>
void run_with_cpu_capability(const Fn& fn) {
#if AK_CPU_HAS_ISA_VARIANTS
  switch (cpu_capability()) {
    case CpuCapability::kAvx512:
      run_avx512(fn);
      return;
    case CpuCapability::kAvx2:
      run_avx2(fn);
      return;
    case CpuCapability::kDefault:
      break;
  }
  run_baseline(fn);
#else
  fn();
#endif
}

}  // namespace alexnet_kernels::cpu
