// The dropout kernel and its Philox generator in the emulator.
#include "cuda/dropout_launch.h"
#include "emulated_ops.h"

namespace alexnet_kernels::emulated {

at::Tensor dropout(const at::Tensor& x, const at::Tensor& seed_offset, double p) {
  return run_dropout(x, seed_offset, p, /*key_in_device_memory=*/false, /*stream=*/nullptr,
                     kNoLaunchCheck);
}

// The kernel reading (seed, offset) from memory, as the CUDA launcher has it
// do for a seed_offset on the device.
at::Tensor dropout_key_in_memory(const at::Tensor& x, const at::Tensor& seed_offset,
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

}  // namespace alexnet_kernels::emulated
