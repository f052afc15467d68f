#include "cpu/max_abs_cache.h"

#include <ATen/ops/aminmax.h>
#include <c10/util/intrusive_ptr.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

namespace alexnet_kernels::cpu {
namespace {

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

struct Entry {
  // A weak reference keeps the TensorImpl's memory (not its storage) alive, so
  // no other tensor can be created at this address while the entry exists.
  WeakImpl impl{c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>()};
  const void* data = nullptr;
  int64_t version = -1;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  at::ScalarType dtype = at::ScalarType::Undefined;
  double max_abs = 0.0;
};

// A network has a handful of weights and biases; beyond that, entries are
// replaced round robin.
constexpr size_t kEntries = 64;

struct Cache {
  std::mutex mutex;
  std::array<Entry, kEntries> entries;
  size_t next = 0;
};

Cache& cache() {
  static Cache instance;
  return instance;
}

bool matches(const Entry& entry, const at::Tensor& t, int64_t version) {
  return !entry.impl.expired() && entry.impl._unsafe_get_target() == t.unsafeGetTensorImpl() &&
         entry.data == t.const_data_ptr() && entry.version == version &&
         entry.dtype == t.scalar_type() && t.sizes().equals(entry.sizes) &&
         t.strides().equals(entry.strides);
}

}  // namespace

double max_abs(const at::Tensor& t) {
  if (t.numel() == 0) {
    return 0.0;
  }
  // aminmax measured 3x faster than an infinity-norm here.
  const auto [low, high] = at::aminmax(t);
  const double lowest = low.item<double>();
  const double highest = high.item<double>();
  // NaN propagates through aminmax; std::max would drop it.
  return std::isnan(lowest) || std::isnan(highest) ? lowest + highest
                                                   : std::max(-lowest, highest);
}

double max_abs_cached(const at::Tensor& t) {
  if (t.is_inference()) {
    return max_abs(t);
  }
  const int64_t version = t._version();
  Cache& c = cache();
  {
    const std::lock_guard<std::mutex> lock(c.mutex);
    for (const Entry& entry : c.entries) {
      if (matches(entry, t, version)) {
        return entry.max_abs;
      }
    }
  }
  // Read outside the lock: another thread's lookups need not wait for it.
  const double value = max_abs(t);
  const std::lock_guard<std::mutex> lock(c.mutex);
  auto slot = std::find_if(c.entries.begin(), c.entries.end(),
                           [](const Entry& entry) { return entry.impl.expired(); });
  if (slot == c.entries.end()) {
    slot = c.entries.begin() + static_cast<std::ptrdiff_t>(c.next);
    c.next = (c.next + 1) % kEntries;
  }
  *slot = Entry{WeakImpl(t.getIntrusivePtr()), t.const_data_ptr(), version, t.sizes().vec(),
                t.strides().vec(), t.scalar_type(), value};
  return value;
}

}  // namespace alexnet_kernels::cpu
