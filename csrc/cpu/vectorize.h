// Instruction-set selection for the CPU kernels.
//
// The extension is built without -march so that one binary runs on any x86-64;
// the hot functions are instead cloned for AVX-512 and AVX2 and the widest one
// the running CPU supports is picked when the library loads (GCC/Clang
// function multiversioning). Helpers they call are forced inline so that they
// are compiled inside each clone, with that clone's vector width.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define AK_CPU_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AK_CPU_MULTIVERSION
#endif

#if defined(__GNUC__) || defined(__clang__)
#define AK_CPU_INLINE inline __attribute__((always_inline))
#else
#define AK_CPU_INLINE inline
#endif
