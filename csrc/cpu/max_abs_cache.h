// The largest |value| of a tensor, remembered for tensors that change rarely
// (weights and biases) so that a check that needs it does not read them on
// every call.
#pragma once

#include <ATen/core/Tensor.h>

namespace alexnet_kernels::cpu {

// The largest |value| of t as a double, NaN if t holds one, 0 for an empty t:
// one reduction pass, no copy.
double max_abs(const at::Tensor& t);

// max_abs(t), taken from a small cache when t is the same tensor (same
// TensorImpl, data pointer, sizes, strides and dtype) at the same version as
// when it was last read. The version counter is the one autograd uses to
// detect in-place changes of saved tensors, so the cache sees every write that
// autograd sees: in-place ops, optimizer steps, load_state_dict. Writes that
// bypass it (through `.data`, numpy() or DLPack) are invisible to both.
// Inference tensors have no version counter and are read every time.
double max_abs_cached(const at::Tensor& t);

}  // namespace alexnet_kernels::cpu
