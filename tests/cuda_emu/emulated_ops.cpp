// Test-only operator library: the project's CUDA kernels and their host glue
// (csrc/cuda/*_launch.h), compiled by the host compiler against the CPU
// emulator and registered for CPU tensors under the namespace
// alexnet_kernels_emu, so pytest compares them with PyTorch like any backend.
//
// Further ops serve the checks of the test suite itself:
//   launched_kernels()           base names of every kernel launched so far
//                                (the kernel coverage check in tests/conftest.py);
//   selftest_broken_lrn(x, bug)  runs a deliberately broken LRN kernel
//                                (selftest/broken_lrn.cuh), to show that the
//                                sanitizer jobs catch bugs in this path;
//   philox4x32_10(counter, key)  the four output words of the kernels' Philox
//                                header (csrc/kernels/philox.cuh), for its
//                                known-answer tests;
//   dropout_key_in_memory(...)   dropout with (seed, offset) read by the kernel,
//                                as for a seed_offset on a CUDA device;
//   grid_stride_indices(...)     the indices the kernels' 32-bit grid-stride
//                                loops visit, checked near 2^31;
//   counters_begin(sample_blocks=0), counters_end() -> str
//                                the emulator's efficiency counters
//                                (tests/cuda_emu/emu_counters.h) for every launch
//                                in between, as JSON; with sample_blocks > 0 a
//                                launch runs only that many of its blocks, so the
//                                outputs of ops run in between are incomplete.
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/conv2d_relu_launch.h"
#include "cuda/dropout_launch.h"
#include "cuda/lrn_launch.h"
#include "cuda/max_pool_launch.h"
#include "schemas.h"
#include "selftest/broken_lrn.cuh"

namespace alexnet_kernels {
namespace {

// The emulator runs each launch to completion and throws on a detected error,
// so there is nothing to check after a launch.
constexpr auto kNoLaunchCheck = [] {};
// The emulator implements the sm_80 tensor-core instructions the kernels use
// (mma.m16n8k16 and the TF32 mma.m16n8k8), so it stands for an sm_80 device.
constexpr int kEmulatedComputeCapabilityMajor = 8;

at::Tensor lrn_emulated(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  return run_lrn_forward(x, size, alpha, beta, k, /*stream=*/nullptr, kNoLaunchCheck);
}

at::Tensor lrn_backward_emulated(const at::Tensor& grad_y, const at::Tensor& x,
                                 const at::Tensor& y, int64_t size, double alpha, double beta,
                                 double k) {
  return run_lrn_backward(grad_y, x, y, size, alpha, beta, k, /*stream=*/nullptr,
                          kNoLaunchCheck);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_emulated(const at::Tensor& x,
                                                       at::IntArrayRef kernel_size,
                                                       at::IntArrayRef stride,
                                                       at::IntArrayRef padding,
                                                       at::IntArrayRef dilation, bool ceil_mode) {
  return run_max_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode,
                              /*stream=*/nullptr, kNoLaunchCheck);
}

at::Tensor max_pool2d_backward_emulated(const at::Tensor& grad_y, const at::Tensor& argmax,
                                        at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation, bool ceil_mode) {
  return run_max_pool_backward(grad_y, argmax, input_size, kernel_size, stride, padding, dilation,
                               ceil_mode, /*stream=*/nullptr, kNoLaunchCheck);
}

at::Tensor dropout_emulated(const at::Tensor& x, const at::Tensor& seed_offset, double p) {
  return run_dropout(x, seed_offset, p, /*key_in_device_memory=*/false, /*stream=*/nullptr,
                     kNoLaunchCheck);
}

// The kernel reading (seed, offset) from memory, as the CUDA launcher has it
// do for a seed_offset on the device.
at::Tensor dropout_key_in_memory_emulated(const at::Tensor& x, const at::Tensor& seed_offset,
                                          double p) {
  return run_dropout(x, seed_offset, p, /*key_in_device_memory=*/true, /*stream=*/nullptr,
                     kNoLaunchCheck);
}

// The indices a grid-stride loop of the kernels visits from `first` (at most
// `limit` of them), to check the loop near 2^31 without a tensor that large.
std::vector<int64_t> grid_stride_indices(int64_t first, int64_t step, int64_t n, int64_t limit) {
  TORCH_CHECK(0 <= first && 0 < step && step <= INT32_MAX && 0 <= n && n <= INT32_MAX,
              "grid_stride_indices: needs 0 <= first, 0 < step and n <= 2^31 - 1, got first ",
              first, ", step ", step, ", n ", n);
  std::vector<int64_t> visited;
  const int step32 = static_cast<int>(step);
  const int n32 = static_cast<int>(n);
  for (int i = static_cast<int>(first); i < n32 && static_cast<int64_t>(visited.size()) < limit;
       i = kernels::grid_stride_next(i, step32, n32)) {
    visited.push_back(i);
  }
  return visited;
}

at::Tensor conv2d_relu_emulated(const at::Tensor& x, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  return run_conv2d_relu_forward(x, weight, bias, stride, padding, dilation, groups,
                                 conv_uses_tf32(x, kEmulatedComputeCapabilityMajor),
                                 /*stream=*/nullptr, kNoLaunchCheck);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_relu_backward_emulated(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  return run_conv2d_relu_backward(grad_y, x, weight, y, stride, padding, dilation, groups,
                                  output_mask,
                                  conv_uses_tf32(x, kEmulatedComputeCapabilityMajor),
                                  /*stream=*/nullptr, kNoLaunchCheck);
}

std::vector<int64_t> philox4x32_10(at::IntArrayRef counter, at::IntArrayRef key) {
  TORCH_CHECK(counter.size() == 4 && key.size() == 2,
              "philox4x32_10: counter must have 4 words and key 2, got ", counter.size(), " and ",
              key.size());
  uint32_t c[4];
  for (int i = 0; i < 4; ++i) {
    c[i] = static_cast<uint32_t>(counter[i]);
  }
  philox::philox4x32_10(c[0], c[1], c[2], c[3], static_cast<uint32_t>(key[0]),
                        static_cast<uint32_t>(key[1]));
  return {c[0], c[1], c[2], c[3]};
}

std::vector<std::string> launched_kernels() { return ak_emu::launched_kernels(); }

void counters_begin(int64_t sample_blocks) {
  TORCH_CHECK(sample_blocks >= 0, "counters_begin: sample_blocks must be >= 0, got ",
              sample_blocks);
  ak_emu::counters_begin(static_cast<uint64_t>(sample_blocks));
}

// Throws (RuntimeError in Python) without a counters_begin() before it.
std::string counters_end() { return ak_emu::counters_end(); }

// LRN forward (size 5, alpha 0.5, beta 0.75, k 1) of a contiguous float32
// tensor by a broken kernel: bug "missing-barrier" or "off-by-one".
at::Tensor selftest_broken_lrn(const at::Tensor& x_in, c10::string_view bug) {
  TORCH_CHECK(bug == "missing-barrier" || bug == "off-by-one",
              "selftest_broken_lrn: bug must be 'missing-barrier' or 'off-by-one', not '", bug,
              "'");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "selftest_broken_lrn: float32 only");
  check_lrn_arguments(x_in, 5, 0.5, 0.75, 1.0);
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) {
    return y;
  }
  const kernels::LrnProblem problem =
      make_lrn_problem(x, at::MemoryFormat::Contiguous, 5, 0.5, 0.75, 1.0);
  broken::launch_broken_lrn_forward(bug == "off-by-one", x.const_data_ptr<float>(),
                                    y.mutable_data_ptr<float>(), problem);
  return y;
}

}  // namespace

TORCH_LIBRARY(alexnet_kernels_emu, m) {
  // The library's own schemas, but for those with no CUDA kernel to emulate.
  namespace schemas = alexnet_kernels::schemas;
  for (const char* schema : schemas::kAll) {
    if (std::find(schemas::kWithoutCudaKernel.begin(), schemas::kWithoutCudaKernel.end(),
                  schema) == schemas::kWithoutCudaKernel.end()) {
      m.def(schema);
    }
  }
  m.def("philox4x32_10(int[] counter, int[] key) -> int[]", &philox4x32_10);
  m.def("launched_kernels() -> str[]", &launched_kernels);
  m.def("counters_begin(int sample_blocks=0) -> ()", &counters_begin);
  m.def("counters_end() -> str", &counters_end);
  m.def("selftest_broken_lrn(Tensor x, str bug) -> Tensor");
  m.def("dropout_key_in_memory(Tensor x, Tensor seed_offset, float p) -> Tensor");
  m.def("grid_stride_indices(int first, int step, int n, int limit) -> int[]",
        &grid_stride_indices);
}

TORCH_LIBRARY_IMPL(alexnet_kernels_emu, CPU, m) {
  m.impl("lrn", &lrn_emulated);
  m.impl("lrn_backward", &lrn_backward_emulated);
  m.impl("max_pool2d", &max_pool2d_emulated);
  m.impl("max_pool2d_backward", &max_pool2d_backward_emulated);
  m.impl("dropout", &dropout_emulated);
  m.impl("conv2d_relu", &conv2d_relu_emulated);
  m.impl("conv2d_relu_backward", &conv2d_relu_backward_emulated);
  m.impl("selftest_broken_lrn", &selftest_broken_lrn);
  m.impl("dropout_key_in_memory", &dropout_key_in_memory_emulated);
}

}  // namespace alexnet_kernels
