// Test-only operator library: the project's CUDA kernels and their host glue
// (csrc/cuda/*_launch.h, one emulated_<op>.cpp per op), compiled by the host compiler against the CPU
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
#include <string>
#include <vector>

#include "cuda_compat.h"
#include "emulated_ops.h"
#include "schemas.h"

namespace alexnet_kernels {
namespace {

std::vector<std::string> launched_kernels() { return ak_emu::launched_kernels(); }

void counters_begin(int64_t sample_blocks) {
  TORCH_CHECK(sample_blocks >= 0, "counters_begin: sample_blocks must be >= 0, got ",
              sample_blocks);
  ak_emu::counters_begin(static_cast<uint64_t>(sample_blocks));
}

// Throws (RuntimeError in Python) without a counters_begin() before it.
std::string counters_end() { return ak_emu::counters_end(); }

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
  m.def("philox4x32_10(int[] counter, int[] key) -> int[]", &emulated::philox4x32_10);
  m.def("launched_kernels() -> str[]", &launched_kernels);
  m.def("counters_begin(int sample_blocks=0) -> ()", &counters_begin);
  m.def("counters_end() -> str", &counters_end);
  m.def("selftest_broken_lrn(Tensor x, str bug) -> Tensor");
  m.def("dropout_key_in_memory(Tensor x, Tensor seed_offset, float p) -> Tensor");
  m.def("grid_stride_indices(int first, int step, int n, int limit) -> int[]",
        &emulated::grid_stride_indices);
}

TORCH_LIBRARY_IMPL(alexnet_kernels_emu, CPU, m) {
  m.impl("lrn", &emulated::lrn);
  m.impl("lrn_backward", &emulated::lrn_backward);
  m.impl("max_pool2d", &emulated::max_pool2d);
  m.impl("max_pool2d_backward", &emulated::max_pool2d_backward);
  m.impl("dropout", &emulated::dropout);
  m.impl("conv2d_relu", &emulated::conv2d_relu);
  m.impl("conv2d_relu_backward", &emulated::conv2d_relu_backward);
  m.impl("selftest_broken_lrn", &emulated::selftest_broken_lrn);
  m.impl("dropout_key_in_memory", &emulated::dropout_key_in_memory);
}

}  // namespace alexnet_kernels
