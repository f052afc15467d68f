// Output allocation of the CPU kernels.
#pragma once

#include <ATen/core/Tensor.h>

namespace alexnet_kernels::cpu {

// An uninitialised CPU tensor like at::empty, for outputs the kernels write in
// full. Blocks of 16 MiB and more are 2 MiB-aligned and advised for
// transparent huge pages, as PyTorch does only under THP_MEM_ALLOC_ENABLE=1: a
// fresh activation-sized output is otherwise faulted in 4 KiB page by page,
// which costs more than the kernels that fill it (about 12 ms for 37 MB here).
// Freed blocks of that size are kept and handed out again (allocation.cpp).
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                        at::MemoryFormat format);

// Returns the freed blocks empty_output keeps for reuse to the system; the bytes freed.
size_t release_cached_blocks();

// Like at::empty_like(x) (memory format preserved): x's strides when x is
// non-overlapping and dense, else its suggested memory format.
at::Tensor empty_output_like(const at::Tensor& x);

}  // namespace alexnet_kernels::cpu
