// Preconditions the CUDA launchers check before the shared host glue runs
// (which checks shapes, dtypes and arguments for every backend).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace alexnet_kernels {

// `name` of op `op` must live on a CUDA device (the dispatcher picks the CUDA
// kernel by any tensor argument, so the others are checked here).
inline void check_on_cuda(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, " (CUDA): ", name, " must be a CUDA tensor, got ", t.device());
}

}  // namespace alexnet_kernels
