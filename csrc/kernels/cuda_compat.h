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
//   * full-mask warp intrinsics, no __CUDA_ARCH__ branches that change results.
#pragma once

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

#elif defined(AK_CUDA_EMULATION)

// Test-only CPU execution layer; its folder is put on the include path by the
// test build (tests/cuda_emu).
#include "cuda_emu.h"

#else
#error "csrc/kernels headers need nvcc, or AK_CUDA_EMULATION with tests/cuda_emu on the include path"
#endif
