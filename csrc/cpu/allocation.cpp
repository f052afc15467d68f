#include "cpu/allocation.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

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

// Freed large blocks are kept for the next output of the same size, up to
// this many bytes: the outputs of one training step are freed in its backward
// and asked for again, same sizes, in the next step's forward. Without reuse
// every one is mapped and faulted in afresh (7.5 ms per 37 MB with huge pages,
// 16-24 ms without, against about 1.5 ms to fill a reused block), and a
// process's first huge-page faults can stall for hundreds of ms while the
// kernel compacts memory. ALEXNET_KERNELS_CPU_BLOCK_CACHE_MB overrides the
// limit; 0 returns every block to the system at once.
constexpr size_t kDefaultCachedBytes = size_t{512} << 20;

size_t cache_limit_from_environment() {
  const char* value = std::getenv("ALEXNET_KERNELS_CPU_BLOCK_CACHE_MB");
  if (value == nullptr || *value == '\0') {
    return kDefaultCachedBytes;
  }
  return static_cast<size_t>(std::strtoull(value, nullptr, 10)) << 20;
}

struct Block {
  void* data;
  size_t bytes;
};

class BlockCache {
 public:
  // A cached block of exactly `bytes` (sizes are rounded to whole huge pages), or null.
  void* take(size_t bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < free_.size(); ++i) {
      if (free_[i].bytes == bytes) {
        void* data = free_[i].data;
        cached_bytes_ -= bytes;
        free_[i] = free_.back();
        free_.pop_back();
        return data;
      }
    }
    return nullptr;
  }

  // Frees every cached block; the bytes freed.
  size_t release() {
    std::vector<Block> blocks;
    size_t bytes = 0;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      bytes = cached_bytes_;
      cached_bytes_ = 0;
    }
    for (const Block& block : blocks) {
      std::free(block.data);
    }
    return bytes;
  }

  // Keeps the block for reuse, or frees it when the cache is full.
  void give_back(const Block& block) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + block.bytes <= limit_) {
        free_.push_back(block);
        cached_bytes_ += block.bytes;
        return;
      }
    }
    std::free(block.data);
  }

 private:
  std::mutex mutex_;
  std::vector<Block> free_;
  size_t cached_bytes_ = 0;
  const size_t limit_ = cache_limit_from_environment();
};

BlockCache& block_cache() {
  // Never destroyed: tensors may outlive static destruction at exit.
  static BlockCache* cache = new BlockCache();
  return *cache;
}

}  // namespace

size_t release_cached_blocks() { return block_cache().release(); }

namespace {

void free_block(void* context) {
  Block* block = static_cast<Block*>(context);
  block_cache().give_back(*block);
  delete block;
}

class HugePageAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePageThreshold) {
      return c10::GetCPUAllocator()->allocate(nbytes);
    }
    const size_t bytes = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    void* data = block_cache().take(bytes);
    if (data == nullptr) {
      const int error = posix_memalign(&data, kHugePage, bytes);
      TORCH_CHECK(error == 0 && data != nullptr, "alexnet_kernels: failed to allocate ", bytes,
                  " bytes of CPU memory");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      // Advice only: without transparent huge pages the block is ordinary memory.
      madvise(data, bytes, MADV_HUGEPAGE);
#endif
    }
    return {data, new Block{data, bytes}, &free_block, c10::Device(c10::DeviceType::CPU)};
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
