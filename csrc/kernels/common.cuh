// Small numeric helpers shared by the kernel headers (no PyTorch includes).
#pragma once

#include "cuda_compat.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace alexnet_kernels::kernels {

// Half types are loaded into fp32 registers and accumulated there; double stays double.
template <typename T>
struct Accumulate {
  using type = float;
};
template <>
struct Accumulate<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Accumulate<T>::type;

// Explicit conversions: PyTorch builds CUDA code with the implicit __half /
// __nv_bfloat16 conversions disabled (__CUDA_NO_HALF_CONVERSIONS__).
template <typename T>
AK_HOST_DEVICE inline acc_t<T> to_acc(T v) {
  return static_cast<acc_t<T>>(v);
}
AK_HOST_DEVICE inline float to_acc(__half v) { return __half2float(v); }
AK_HOST_DEVICE inline float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
AK_HOST_DEVICE inline T from_acc(acc_t<T> v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return static_cast<T>(v);
  }
}

template <typename T>
AK_HOST_DEVICE inline T ak_min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
AK_HOST_DEVICE inline T ak_max(T a, T b) {
  return a < b ? b : a;
}

template <typename T>
AK_HOST_DEVICE inline T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// The index after i in a grid-stride loop over [0, n) of 32-bit indices: n once
// the step would reach or pass n, so that i + step never overflows int when n
// is close to 2^31 (i += step would wrap to a negative index that passes i < n).
AK_HOST_DEVICE inline int grid_stride_next(int i, int step, int n) {
  return i < n - step ? i + step : n;
}

AK_DEVICE_INLINE float power(float base, float exponent) { return powf(base, exponent); }
AK_DEVICE_INLINE double power(double base, double exponent) { return pow(base, exponent); }

}  // namespace alexnet_kernels::kernels
