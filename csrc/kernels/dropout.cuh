// Dropout as a CUDA kernel (no PyTorch includes: the same source runs on the
// CPU in the tests): y = x * (keep ? scale : 0) over flat memory, the keep bits
// from Philox4x32-10 under the convention written in philox.cuh. Forward and
// backward are the same kernel (the backward applies it to grad_y).
//
// One thread handles one Philox counter, i.e. four consecutive elements, so
// all four words of a call are used; when x and y are aligned for it, the four
// elements move as one vector load and store.
#pragma once

#include "common.cuh"
#include "philox.cuh"

#include <cstddef>
#include <cstdint>

namespace alexnet_kernels::kernels {

constexpr int kDropoutThreads = 256;
// Grid-stride loop beyond this many blocks; also keeps the grid within CUDA's limit.
constexpr int64_t kDropoutMaxBlocks = 65535;

template <typename Acc>
struct DropoutArgs {
  int64_t numel;
  int64_t groups;  // Philox counters: ceil(numel / 4)
  uint64_t seed;
  uint64_t offset;
  // When not null, (seed, offset) are read from this device memory instead: a
  // key drawn on the device (under CUDA graph capture, a new one at every
  // replay) that the host cannot read without synchronizing.
  const int64_t* key;
  uint32_t threshold;
  Acc scale;
};

template <typename T>
struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

// Multiplying by a selected factor (rather than selecting x * scale or 0)
// gives PyTorch's results exactly, -0.0 and NaN included.
template <typename T, typename Acc>
AK_DEVICE_INLINE T drop(T v, uint32_t word, const DropoutArgs<Acc>& a) {
  return from_acc<T>(to_acc(v) * (word < a.threshold ? a.scale : Acc(0)));
}

template <typename T, bool kVectorised>
__global__ void __launch_bounds__(kDropoutThreads)
    dropout_kernel(const T* __restrict__ x, T* __restrict__ y, DropoutArgs<acc_t<T>> a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const uint64_t seed = a.key != nullptr ? static_cast<uint64_t>(a.key[0]) : a.seed;
  const uint64_t offset = a.key != nullptr ? static_cast<uint64_t>(a.key[1]) : a.offset;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < a.groups;
       g += stride) {
    const philox::Words w = philox::dropout_words(seed, offset, static_cast<uint64_t>(g));
    const int64_t first = 4 * g;
    if (kVectorised && first + 4 <= a.numel) {
      const Pack4<T> in = ak_ld(reinterpret_cast<const Pack4<T>*>(x + first));
      Pack4<T> out;
      for (int i = 0; i < 4; ++i) {
        out.v[i] = drop(in.v[i], w.w[i], a);
      }
      ak_st(reinterpret_cast<Pack4<T>*>(y + first), out);
    } else {
      const int count = static_cast<int>(ak_min<int64_t>(4, a.numel - first));
      for (int i = 0; i < count; ++i) {
        ak_st(y + (first + i), drop(ak_ld(x + (first + i)), w.w[i], a));
      }
    }
  }
}

// Launch helper shared by the CUDA launcher and the CPU emulation tests; the
// caller skips empty tensors (a zero-sized grid is invalid). `key` is null when
// (seed, offset) are passed by value, else the device memory holding them.
template <typename T>
void launch_dropout(const T* x, T* y, int64_t numel, uint64_t seed, uint64_t offset,
                    const int64_t* key, uint32_t threshold, acc_t<T> scale, cudaStream_t stream) {
  DropoutArgs<acc_t<T>> args{numel, ceil_div<int64_t>(numel, 4), seed, offset, key, threshold,
                             scale};
  const int64_t blocks = ak_min(ceil_div<int64_t>(args.groups, kDropoutThreads), kDropoutMaxBlocks);
  const bool aligned = reinterpret_cast<uintptr_t>(x) % alignof(Pack4<T>) == 0 &&
                       reinterpret_cast<uintptr_t>(y) % alignof(Pack4<T>) == 0;
  auto kernel = aligned ? &dropout_kernel<T, true> : &dropout_kernel<T, false>;
  AK_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kDropoutThreads), 0, stream)(
      x, y, args);
}

}  // namespace alexnet_kernels::kernels
