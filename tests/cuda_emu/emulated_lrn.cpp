// The LRN kernels, and the deliberately broken one of the sanitizer self-test, in the emulator.
#include <ATen/ops/empty.h>

#include "cuda/lrn_launch.h"
#include "emulated_ops.h"
#include "selftest/broken_lrn.cuh"

namespace alexnet_kernels::emulated {

at::Tensor lrn(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  return run_lrn_forward(x, size, alpha, beta, k, /*stream=*/nullptr, kNoLaunchCheck);
}

at::Tensor lrn_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                 const at::Tensor& y, int64_t size, double alpha, double beta,
                                 double k) {
  return run_lrn_backward(grad_y, x, y, size, alpha, beta, k, /*stream=*/nullptr,
                          kNoLaunchCheck);
}


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

}  // namespace alexnet_kernels::emulated
