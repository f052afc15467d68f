#include "cpu/allocation.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace alexnet_kernels::cpu {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
// Smaller outputs keep ordinary pages: zeroing a whole 2 MiB page at its first
// touch stalls the thread that touches it, which measured slower than 4 KiB
// faults spread over the threads for outputs of a few MB (max-pool forward,
// 9 MB) and faster for activation-sized ones (its backward, 37 MB).
constexpr size_t kHugePageThreshold = size_t{16} << 20;

void free_block(void* data) { std::free(data); }

class HugePageAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePageThreshold) {
      return c10::GetCPUAllocator()->allocate(nbytes);
    }
    void* data = nullptr;
    const int error = posix_memalign(&data, kHugePage, nbytes);
    TORCH_CHECK(error == 0 && data != nullptr, "alexnet_kernels: failed to allocate ", nbytes,
                " bytes of CPU memory");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advice only: without transparent huge pages the block is ordinary memory.
    madvise(data, nbytes, MADV_HUGEPAGE);
#endif
    return {data, data, &free_block, c10::Device(c10::DeviceType::CPU)};
  }

  // Blocks come with two different deleters, so there is no single raw one.
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src, size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

HugePageAllocator& huge_page_allocator() {
  static HugePageAllocator allocator;
  return allocator;
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                        at::MemoryFormat format) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::detail::empty_generic(sizes, &huge_page_allocator(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), format);
}

at::Tensor empty_output_like(const at::Tensor& x) {
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());
  if (x.is_non_overlapping_and_dense()) {
    return at::detail::empty_strided_generic(x.sizes(), x.strides(), &huge_page_allocator(),
                                             c10::DispatchKeySet(c10::DispatchKey::CPU),
                                             x.scalar_type());
  }
  return empty_output(x.sizes(), x.options(), x.suggest_memory_format());
}

}  // namespace alexnet_kernels::cpu
