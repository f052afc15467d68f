// Host-side argument handling shared by the CPU and CUDA dropout implementations.
//
// The op is dropout(Tensor x, Tensor seed_offset, float p): seed_offset is an
// int64 tensor holding (seed, offset), on the CPU or (for the CUDA kernel, which
// then reads it on the device) on x's device; p is in (0, 1) (the Python API
// handles p = 0 and p = 1 without a kernel). The mask convention is written in
// csrc/kernels/philox.cuh. The backward is the same op applied to grad_y.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace alexnet_kernels {

struct DropoutKey {
  uint64_t seed;
  uint64_t offset;
};

inline void check_dropout_arguments(const at::Tensor& x, const at::Tensor& seed_offset,
                                    double p) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "dropout: x must be float64, float32, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(p > 0.0 && p < 1.0,
              "dropout: the kernel needs 0 < p < 1 (alexnet_kernels.dropout handles p = 0 and "
              "p = 1 itself), got p = ", p);
  TORCH_CHECK(seed_offset.scalar_type() == at::kLong,
              "dropout: seed_offset must be an int64 tensor, got ", seed_offset.scalar_type());
  TORCH_CHECK(seed_offset.device().is_cpu() || seed_offset.device() == x.device(),
              "dropout: seed_offset must be a CPU tensor or on x's device (", x.device(),
              "), got ", seed_offset.device());
  TORCH_CHECK(seed_offset.dim() == 1 && seed_offset.numel() == 2,
              "dropout: seed_offset must have shape (2,) holding (seed, offset), got shape ",
              seed_offset.sizes());
}

// The int64 values are the two's-complement bits of the unsigned seed and offset.
inline DropoutKey read_dropout_key(const at::Tensor& seed_offset) {
  const at::Tensor values = seed_offset.contiguous();
  const int64_t* v = values.const_data_ptr<int64_t>();
  return {static_cast<uint64_t>(v[0]), static_cast<uint64_t>(v[1])};
}

// Keep iff the element's 32-bit word < threshold: P(keep) = threshold / 2^32,
// the representable probability closest below 1 - p.
inline uint32_t dropout_threshold(double p) {
  const double scaled = std::floor((1.0 - p) * 4294967296.0);
  return scaled >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(scaled);
}

// PyTorch's eager dropout multiplies by noise.div_(1 - p), i.e. by
// 1 / (1 - p) rounded to the accumulation type after 1 - p is; dividing in
// double first rounds the same (53 >= 2 * 24 + 2 bits), so float32 results
// are bit-identical to eager for the same mask.
template <typename Acc>
Acc dropout_scale(double p) {
  return static_cast<Acc>(1.0 / static_cast<double>(static_cast<Acc>(1.0 - p)));
}

// The kernels treat memory as flat. The output is empty_like(x): x's own
// strides when x is non-overlapping and dense (contiguous, channels_last or
// any permutation), else its suggested memory format.
inline at::Tensor dropout_output(const at::Tensor& x) {
  return at::empty_like(x, at::MemoryFormat::Preserve);
}

// x in the output's memory order: x itself, or a copy when x is not dense.
inline at::Tensor dropout_input_like(const at::Tensor& x, const at::Tensor& y) {
  return x.strides() == y.strides() ? x : at::empty_like(y).copy_(x);
}

}  // namespace alexnet_kernels
