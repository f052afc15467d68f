// Host glue of the CUDA LRN kernels that does not depend on a CUDA device:
// layout, output allocation, launch plan, dtype dispatch. Shared by the CUDA
// launcher (csrc/cuda/lrn.cu), which adds the device guard, the current stream
// and the launch check, and by the tests that run the same kernels on the CPU.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>

#include "kernel_types.h"
#include "kernels/lrn.cuh"
#include "lrn.h"

namespace alexnet_kernels {

inline kernels::LrnPlan checked_lrn_plan(const kernels::LrnProblem& problem, const at::Tensor& x) {
  const kernels::LrnPlan plan = kernels::plan_lrn(problem, x.element_size());
  TORCH_CHECK(plan.valid, "lrn (CUDA): cannot run size=", problem.size, " on shape ", x.sizes(),
              ": ", plan.reason, "; use backend='torch' for this case");
  return plan;
}

inline kernels::LrnProblem make_lrn_problem(const at::Tensor& x, at::MemoryFormat format,
                                            int64_t size, double alpha, double beta, double k) {
  const LrnExtent e = lrn_extent(x);
  return {e.batch, e.channels,          e.pixels, format != at::MemoryFormat::Contiguous,
          static_cast<int>(size), alpha, beta,     k};
}

// `after_launch()` runs right after each kernel launch (the launch check on a GPU).
template <typename AfterLaunch>
at::Tensor run_lrn_forward(const at::Tensor& x_in, int64_t size, double alpha, double beta,
                           double k, cudaStream_t stream, const AfterLaunch& after_launch) {
  check_lrn_arguments(x_in, size, alpha, beta, k);
  const at::MemoryFormat format = lrn_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(format));
  if (y.numel() == 0) {
    return y;  // a zero-sized grid is not a valid launch
  }
  if (lrn_is_identity(beta)) {
    return y.copy_(x);  // on the current stream
  }
  const kernels::LrnProblem problem = make_lrn_problem(x, format, size, alpha, beta, k);
  const kernels::LrnPlan plan = checked_lrn_plan(problem, x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_forward_cuda",
                                  [&] {
    kernels::launch_lrn_forward(kernel_ptr(x.const_data_ptr<scalar_t>()),
                                kernel_ptr(y.mutable_data_ptr<scalar_t>()), problem, plan, stream);
    after_launch();
  });
  return y;
}

template <typename AfterLaunch>
at::Tensor run_lrn_backward(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                            const at::Tensor& y_in, int64_t size, double alpha, double beta,
                            double k, cudaStream_t stream, const AfterLaunch& after_launch) {
  check_lrn_arguments(x_in, size, alpha, beta, k);
  check_lrn_backward_arguments(grad_y_in, x_in, y_in);
  const at::MemoryFormat format = lrn_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor y = y_in.contiguous(format);
  const at::Tensor grad_y = grad_y_in.contiguous(format);
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));
  if (grad_x.numel() == 0) {
    return grad_x;
  }
  if (lrn_is_identity(beta)) {
    // Below autograd: a caller's x may require grad, and out= ops refuse that.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return at::add_out(grad_x, grad_y, x, /*alpha=*/0);
  }
  const kernels::LrnProblem problem = make_lrn_problem(x, format, size, alpha, beta, k);
  const kernels::LrnPlan plan = checked_lrn_plan(problem, x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward_cuda",
                                  [&] {
    kernels::launch_lrn_backward(kernel_ptr(grad_y.const_data_ptr<scalar_t>()),
                                 kernel_ptr(x.const_data_ptr<scalar_t>()),
                                 kernel_ptr(y.const_data_ptr<scalar_t>()),
                                 kernel_ptr(grad_x.mutable_data_ptr<scalar_t>()), problem, plan,
                                 stream);
    after_launch();
  });
  return grad_x;
}

}  // namespace alexnet_kernels
