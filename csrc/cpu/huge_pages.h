// Transparent huge pages for large fresh outputs of the CPU kernels.
//
// A tensor of tens of MB is a new mapping from the OS on every allocation, and
// faulting it in 4 KiB pages (each zeroed by the kernel) can cost more than the
// op that writes it. Advising 2 MiB pages over the buffer before the first
// write cuts the number of faults 512-fold, as PyTorch's THP_MEM_ALLOC_ENABLE=1
// does for every allocation. It is advice only: where transparent huge pages
// are off, or the call fails, nothing changes.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace alexnet_kernels {

// Outputs below this size may come from the heap, and gain little.
constexpr size_t kHugePageAdviceMinBytes = size_t{8} << 20;

inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  if (bytes < kHugePageAdviceMinBytes) {
    return;
  }
  // Only whole 2 MiB pages inside the buffer: never advise memory beyond it.
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (end > begin) {
    (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace alexnet_kernels
