// The host functions of the emulated ops (tests/cuda_emu/emulated_ops.cpp registers
// them): one source file per op, each compiling that op's real kernel headers and
// launch glue against the emulator, so the build runs them in parallel.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace alexnet_kernels::emulated {

// The emulator runs each launch to completion and throws on a detected error,
// so there is nothing to check after a launch.
constexpr auto kNoLaunchCheck = [] {};
// The emulator implements the sm_80 tensor-core instructions the kernels use
// (mma.m16n8k16 and the TF32 mma.m16n8k8), so it stands for an sm_80 device.
constexpr int kEmulatedComputeCapabilityMajor = 8;

at::Tensor lrn(const at::Tensor& x, int64_t size, double alpha, double beta, double k);
at::Tensor lrn_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& y,
                        int64_t size, double alpha, double beta, double k);
// LRN forward (size 5, alpha 0.5, beta 0.75, k 1) of a contiguous float32
// tensor by a broken kernel: bug "missing-barrier" or "off-by-one".
at::Tensor selftest_broken_lrn(const at::Tensor& x, c10::string_view bug);

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& x, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode);
at::Tensor max_pool2d_backward(const at::Tensor& grad_y, const at::Tensor& argmax,
                               at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode);

at::Tensor dropout(const at::Tensor& x, const at::Tensor& seed_offset, double p);
at::Tensor dropout_key_in_memory(const at::Tensor& x, const at::Tensor& seed_offset, double p);
std::vector<int64_t> grid_stride_indices(int64_t first, int64_t step, int64_t n, int64_t limit);
std::vector<int64_t> philox4x32_10(at::IntArrayRef counter, at::IntArrayRef key);

at::Tensor conv2d_relu(const at::Tensor& x, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_relu_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask);

}  // namespace alexnet_kernels::emulated
