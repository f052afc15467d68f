// Test-only operator library: the project's CUDA kernels and their host glue
// (csrc/cuda/*_launch.h), compiled by the host compiler against the CPU
// emulator and registered for CPU tensors under the namespace
// alexnet_kernels_emu, so pytest compares them with PyTorch like any backend.
#include <torch/library.h>

#include "cuda/lrn_launch.h"

namespace alexnet_kernels {
namespace {

// The emulator runs each launch to completion and throws on a detected error,
// so there is nothing to check after a launch.
constexpr auto kNoLaunchCheck = [] {};

at::Tensor lrn_emulated(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  return run_lrn_forward(x, size, alpha, beta, k, /*stream=*/nullptr, kNoLaunchCheck);
}

at::Tensor lrn_backward_emulated(const at::Tensor& grad_y, const at::Tensor& x,
                                 const at::Tensor& y, int64_t size, double alpha, double beta,
                                 double k) {
  return run_lrn_backward(grad_y, x, y, size, alpha, beta, k, /*stream=*/nullptr,
                          kNoLaunchCheck);
}

}  // namespace

TORCH_LIBRARY(alexnet_kernels_emu, m) {
  m.def("lrn(Tensor x, int size, float alpha, float beta, float k) -> Tensor");
  m.def(
      "lrn_backward(Tensor grad_y, Tensor x, Tensor y, int size, float alpha, float beta, "
      "float k) -> Tensor");
}

TORCH_LIBRARY_IMPL(alexnet_kernels_emu, CPU, m) {
  m.impl("lrn", &lrn_emulated);
  m.impl("lrn_backward", &lrn_backward_emulated);
}

}  // namespace alexnet_kernels
