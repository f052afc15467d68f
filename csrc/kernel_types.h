// Maps PyTorch's scalar types to the CUDA types the kernel headers are written
// for. Used by the CUDA launchers and by the test build that runs the same
// kernels on the CPU; c10::Half / c10::BFloat16 share their bit layout with
// __half / __nv_bfloat16, so data pointers are reinterpreted, never converted.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace alexnet_kernels {

template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<c10::Half> {
  using type = __half;
};
template <>
struct KernelType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

static_assert(sizeof(c10::Half) == sizeof(__half), "c10::Half and __half must match");
static_assert(sizeof(c10::BFloat16) == sizeof(__nv_bfloat16),
              "c10::BFloat16 and __nv_bfloat16 must match");

template <typename T>
auto* kernel_ptr(T* data) {
  return reinterpret_cast<typename KernelType<T>::type*>(data);
}
template <typename T>
const auto* kernel_ptr(const T* data) {
  return reinterpret_cast<const typename KernelType<T>::type*>(data);
}

}  // namespace alexnet_kernels
