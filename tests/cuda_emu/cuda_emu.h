// CPU execution layer for the project's CUDA kernels (tests only).
//
// csrc/kernels/cuda_compat.h includes this header when AK_CUDA_EMULATION is
// defined and the compiler is not nvcc. The kernel headers then compile with
// a plain host C++20 compiler (g++ -std=c++20 -pthread) and run on the CPU:
//
//   * blocks run one after another; the threads of a block run concurrently,
//     one OS thread per CUDA thread (a pool reused across blocks/launches), so
//     __syncthreads is a real barrier and ThreadSanitizer sees real races;
//   * __syncthreads checks that all threads of a generation arrive at the same
//     call site; threads that return early drop out of barriers (as on GPUs);
//   * shared memory (AK_SHARED_ARRAY / AK_DYNAMIC_SHARED) is poisoned with 0xff
//     bytes (NaN for floats) before each block, so reads of never-written
//     shared memory show up in the results;
//   * warp intrinsics rendezvous the 32 lanes (linear thread id / 32) of a warp;
//   * a watchdog aborts the process, printing where every thread is, when no
//     thread makes progress for AK_EMU_TIMEOUT_S seconds (default 20);
//   * AK_LAUNCH runs the whole grid synchronously and throws std::runtime_error
//     listing every error recorded (divergent barriers, bad configurations...).
//
// Limitations (see README.md): full-warp masks only; fast-math intrinsics are
// exact; atomics are sequentially consistent; no wmma, cooperative groups,
// textures, __constant__ uploads or dynamic parallelism; one launch at a time.
#pragma once

#if defined(__CUDACC__)
#error "cuda_emu.h is the host-compiler emulation of CUDA; nvcc uses the real thing"
#endif

// CUDA's own headers first: the vector types, dim3, cudaStream_t, __half and
// __nv_bfloat16 (with host conversions) are the real ones. Their host-compiler
// path defines the execution-space keywords as empty annotations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>

// Execution-space keywords: kernels and device functions are ordinary host
// functions. Redefined explicitly rather than relying on the toolkit's
// host_defines.h so that a toolkit change cannot silently alter them.
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
// __restrict__ is a GNU C++ keyword already; __align__ and __noinline__ keep
// their host definitions from host_defines.h.

// A raw __shared__ variable would be one static shared by all blocks and
// never poisoned; kernel code must use the AK_ macros (cuda_compat.h rules),
// so make the mistake a compile error that names the fix.
#undef __shared__
#define __shared__ AK_EMU_ERROR_use_AK_SHARED_ARRAY_or_AK_DYNAMIC_SHARED_not___shared__

#include "emu_runtime.h"
#include "emu_device.h"

// --- the cuda_compat.h interface -------------------------------------------

#define AK_HOST_DEVICE
#define AK_DEVICE_INLINE inline

// One function-local static per kernel instantiation, shared by the threads of
// the running block (blocks run one at a time) and poisoned by the first
// thread of each block to reach the declaration; 16-byte aligned as on the GPU.
#define AK_SHARED_ARRAY(type, name, dims) \
  alignas(16) static type name dims;      \
  ::ak_emu::register_static_shared(&name, sizeof(name))

// The launch's dynamic shared memory: exactly `smem` bytes, 16-byte aligned,
// poisoned before every block.
#define AK_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::ak_emu::dynamic_shared_memory())

// Memory accessors (cuda_compat.h): the access itself, recorded for the
// efficiency counters (emu_counters.h) with its call site when they are on.
template <typename T>
inline T ak_ld(const T* p, std::source_location loc = std::source_location::current()) {
  ::ak_emu::record_access(p, sizeof(T), ::ak_emu::AccessKind::kLoad, loc);
  return *p;
}
// memcpy: the host compiler's aliasing rules forbid reading T objects as a U.
template <typename U, typename T>
inline U ak_ld_as(const T* p, std::source_location loc = std::source_location::current()) {
  ::ak_emu::record_access(p, sizeof(U), ::ak_emu::AccessKind::kLoad, loc);
  U bits;
  std::memcpy(&bits, p, sizeof(U));
  return bits;
}
namespace ak_emu {
template <typename T>
inline void recorded_store(T* p, const typename ak_identity<T>::type& v,
                           const std::source_location& loc) {
  record_access(p, sizeof(T), AccessKind::kStore, loc);
  *p = v;
}
}  // namespace ak_emu
// A macro as under nvcc (cuda_compat.h), so that both accept the same arguments.
#define ak_st(p, v) ::ak_emu::recorded_store((p), (v), std::source_location::current())

// AK_LAUNCH(kernel, grid, block, smem_bytes, stream)(args...): runs the grid
// synchronously; throws std::runtime_error if any error was recorded. The
// stream is accepted and ignored (launches are synchronous anyway).
#define AK_LAUNCH(kernel, grid, block, smem, stream)                      \
  ::ak_emu::Launch((kernel), (grid), (block), (smem), (stream), #kernel, \
                   std::source_location::current())
