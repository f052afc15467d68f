// The one switch between real CUDA and the CPU execution layer used by the tests.
//
// Kernel headers under csrc/kernels include only this file (never a PyTorch
// header), so the very same source is compiled by nvcc for the GPU and by a
// host C++20 compiler for the emulation tests (tests/cuda_emu).
//
// Rules for kernel code (see CONTRIBUTING.md):
//   * shared memory only through AK_SHARED_ARRAY / AK_DYNAMIC_SHARED, so the
//     emulator can share it between the threads of a block and poison it;
//   * launches only through AK_LAUNCH, so the launch arithmetic is shared too;
//   * full-mask warp intrinsics, no __CUDA_ARCH__ branches that change results;
//   * memory accesses that the efficiency counters should see through
//     ak_ld(p) / ak_st(p, v): plain loads and stores on the GPU, recorded (call
//     site, address, size) by the emulator when its counters are on
//     (tests/cuda_emu/emu_counters.h). One pair serves global and shared
//     memory: the emulator tells them apart by the address. ak_ld_as<U>(p)
//     reads the bytes at p as one wider U (a vector access), counted likewise.
#pragma once

// Keeps the value parameter of the emulator's store from taking part in
// deduction, so that ak_st(p, v) stores a T whatever converts to it.
template <typename T>
struct ak_identity {
  using type = T;
};

#if defined(__CUDACC__)

#include <cuda_runtime.h>

#define AK_HOST_DEVICE __host__ __device__
#define AK_DEVICE_INLINE __device__ __forceinline__

// Statically sized shared array: AK_SHARED_ARRAY(float, tile, [32][33]);
// 16-byte aligned whatever the element type, so that 4-, 8- and 16-byte
// accesses to a half/bf16 (or char) array are aligned.
#define AK_SHARED_ARRAY(type, name, dims) __shared__ __align__(16) type name dims

// Dynamically sized shared memory (the smem argument of the launch), viewed as
// an array of `type`. 16-byte aligned so vector types may be stored in it.
#define AK_DYNAMIC_SHARED(type, name)                                  \
  extern __shared__ __align__(16) unsigned char ak_dynamic_smem_raw[]; \
  type* name = reinterpret_cast<type*>(ak_dynamic_smem_raw)

// AK_LAUNCH(kernel_ptr, grid, block, smem_bytes, stream)(args...);
// `kernel_ptr` must be a single token (e.g. a local `auto kernel = &k<T, X>;`)
// because template argument lists would split the macro arguments.
#define AK_LAUNCH(kernel, grid, block, smem, stream) \
  kernel<<<(grid), (block), (smem), (stream)>>>

// Memory accessors: exactly *p and *p = v (see the rules above). ak_st is a
// macro: in the assignment it stands for, the value is evaluated before the
// address (C++17), a call would evaluate them the other way round, and nvcc then
// schedules the kernel differently; as a macro the SASS is that of the plain
// store. (An argument with a top-level comma needs parentheses.)
template <typename T>
__device__ __forceinline__ T ak_ld(const T* p) {
  return *p;
}
#define ak_st(p, v) ((void)(*(p) = (v)))

// The sizeof(U) bytes at p read as one U (one vector access: a 32-bit pair of
// 16-bit elements, a uint4 of eight); p is aligned for U.
template <typename U, typename T>
__device__ __forceinline__ U ak_ld_as(const T* p) {
  return *reinterpret_cast<const U*>(p);
}

// Asynchronous global -> shared copies (sm_80+; the launchers pick kernels that
// use them only there): ak_cp_async<kBytes>(dst, src, src_bytes) copies the
// first src_bytes (0..kBytes) bytes at src and zero-fills the rest of the
// kBytes at dst: cp.async.cg (L2 only) for 16 bytes, cp.async.ca for 4 and 8.
// dst and src are kBytes-aligned. ak_cp_async_commit() closes a group of the
// thread's copies; ak_cp_async_wait<N>() waits until at most the newest N
// committed groups are pending, ak_cp_async_wait_all() for every copy. Other
// threads see the data only after a barrier that follows the wait.
template <int kBytes>
__device__ __forceinline__ void ak_cp_async(void* smem_dst, const void* global_src,
                                            int src_bytes) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src),
                 "r"(src_bytes)
                 : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(global_src),
                 "n"(kBytes), "r"(src_bytes)
                 : "memory");
  }
#else
  __trap();
#endif
}

__device__ __forceinline__ void ak_cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int kNewestKept>
__device__ __forceinline__ void ak_cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kNewestKept) : "memory");
#endif
}

__device__ __forceinline__ void ak_cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

#elif defined(AK_CUDA_EMULATION)

// Test-only CPU execution layer; its folder is put on the include path by the
// test build (tests/cuda_emu).
#include "cuda_emu.h"

#else
#error "csrc/kernels headers need nvcc, or AK_CUDA_EMULATION with tests/cuda_emu on the include path"
#endif
