// Execution engine of the CUDA emulator: thread pool, blocks, barriers, warp
// rendezvous, shared memory bookkeeping, the watchdog and the launch.
//
// Model: the blocks of a grid run one after another; the threads of a block
// run concurrently, one OS thread per CUDA thread, so that barriers, warp
// intrinsics and data races behave (and are checked by ThreadSanitizer) like
// real concurrency rather than like a sequential loop that hides bugs.
//
// Optional fiber mode (AK_EMU_MODE=fibers, see emu_fiber.h): the threads of a
// block become user-space fibers on one OS thread, switched at barriers and
// warp operations. Same checks, one to two orders of magnitude faster, but
// races cannot show; sanitizer builds always use OS threads.
//
// Every piece of state shared between emulated threads is guarded by the
// block's std::mutex (or the pool's per-worker mutexes), never by hand-rolled
// lock-free code, so the emulator itself adds no ThreadSanitizer reports.
// Under ThreadSanitizer the happens-before edges it creates are exactly those
// a GPU guarantees (barriers, warp-synchronous intrinsics, launch boundaries):
// see EngineSection.
//
// Included by cuda_emu.h after the CUDA headers; not meant to be used alone.
#pragma once

#include <algorithm>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <source_location>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <cxxabi.h>  // abi::__cxa_demangle (launch record)
#include <dlfcn.h>   // dladdr (launch record)

#include <vector_types.h>

#include "emu_counters.h"

// CUDA's built-in variables. thread_local: each OS thread is one CUDA thread.
// Kernel code only reads them; the engine sets them before the kernel runs.
inline thread_local uint3 threadIdx{};
inline thread_local uint3 blockIdx{};
inline thread_local dim3 blockDim{};
inline thread_local dim3 gridDim{};
inline constexpr int warpSize = 32;

// Whether a sanitizer instruments this build (GCC's macros, Clang's features).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define AK_EMU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define AK_EMU_SANITIZED 1
#endif
#endif
#ifndef AK_EMU_SANITIZED
#define AK_EMU_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define AK_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AK_EMU_TSAN 1
#endif
#endif
#ifndef AK_EMU_TSAN
#define AK_EMU_TSAN 0
#endif

#if AK_EMU_TSAN
#include <sanitizer/tsan_interface.h>  // __tsan_acquire, __tsan_release
// ThreadSanitizer's dynamic annotations (exported by its runtime).
extern "C" {
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
}
#endif

namespace ak_emu {

// ---------------------------------------------------------------------------
// What ThreadSanitizer may see of the engine
// ---------------------------------------------------------------------------
//
// The engine keeps its bookkeeping under one mutex per block, which emulated
// threads take when they start, return, reach a barrier or warp operation and
// wake up from one. ThreadSanitizer would take every one of those locks as a
// happens-before edge: a thread that starts after another has returned would
// be ordered after all of its work. Whether a missing __syncthreads showed
// would then depend on whether the OS happened to run the two threads at the
// same time (on a 2-core machine it often did not).
//
// So under ThreadSanitizer the bookkeeping runs in an EngineSection, in which
// it ignores the engine's synchronisation and memory accesses, and the edges
// a GPU does guarantee are declared explicitly instead: every arrival at a
// barrier (warp operation) releases a token of that generation, which every
// thread leaving it acquires; a returning thread releases a token the launcher
// acquires once the block is done. The launch itself (inputs, shared-memory
// poison) reaches the threads through the pool's per-worker mutex. Without
// ThreadSanitizer all of this compiles to nothing.
class EngineSection {
 public:
  EngineSection() {
#if AK_EMU_TSAN
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
  }
  ~EngineSection() {
#if AK_EMU_TSAN
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
#endif
  }
  EngineSection(const EngineSection&) = delete;
  EngineSection& operator=(const EngineSection&) = delete;

  // Releases `token` from inside this section (whose synchronisation is
  // otherwise ignored).
  void release_from_inside(const void* token) {
#if AK_EMU_TSAN
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    __tsan_release(const_cast<void*>(token));
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
#else
    (void)token;
#endif
  }
  // Release and acquire outside any section.
  static void release(const void* token) {
#if AK_EMU_TSAN
    __tsan_release(const_cast<void*>(token));
#else
    (void)token;
#endif
  }
  static void acquire(const void* token) {
#if AK_EMU_TSAN
    __tsan_acquire(const_cast<void*>(token));
#else
    (void)token;
#endif
  }
};

inline constexpr unsigned kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr unsigned kMaxThreadsPerBlock = 1024;
// Largest dynamic shared memory a block may opt into on current GPUs (H100).
inline constexpr std::size_t kMaxDynamicSharedBytes = 227u * 1024u;
// Further errors of a launch are only counted, so a broken kernel run by
// thousands of threads still produces a readable message.
inline constexpr std::size_t kMaxRecordedErrors = 16;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

// A source position; call sites are compared to detect divergent barriers.
struct Site {
  const char* file = "?";
  unsigned line = 0;
  unsigned column = 0;
  const char* function = "?";

  static Site from(const std::source_location& loc) {
    return Site{loc.file_name(), static_cast<unsigned>(loc.line()),
                static_cast<unsigned>(loc.column()), loc.function_name()};
  }
  friend bool operator==(const Site& a, const Site& b) {
    return a.line == b.line && a.column == b.column && std::strcmp(a.file, b.file) == 0;
  }
  std::string str() const {
    return std::string(file) + ":" + std::to_string(line) + ":" + std::to_string(column);
  }
};

inline std::string dim_str(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
inline std::string dim_str(const dim3& d) { return dim_str(uint3{d.x, d.y, d.z}); }

// Watchdog timeout: AK_EMU_TIMEOUT_S seconds (default 20) without progress.
inline double watchdog_timeout_s() {
  static const double value = [] {
    const char* env = std::getenv("AK_EMU_TIMEOUT_S");
    if (env == nullptr || *env == '\0') return 20.0;
    char* end = nullptr;
    const double v = std::strtod(env, &end);
    if (end == env || !(v > 0.0)) {
      std::fprintf(stderr, "ak_emu: ignoring invalid AK_EMU_TIMEOUT_S='%s', using 20 s\n", env);
      return 20.0;
    }
    return v;
  }();
  return value;
}

// How the threads of a block are run: AK_EMU_MODE=threads (default) or fibers.
inline bool fiber_mode() {
  static const bool value = [] {
    const char* env = std::getenv("AK_EMU_MODE");
    const std::string mode = env == nullptr ? "" : env;
    if (mode.empty() || mode == "threads") return false;
    if (mode != "fibers") {
      std::fprintf(stderr, "ak_emu: unknown AK_EMU_MODE='%s', using threads\n", mode.c_str());
      return false;
    }
#if AK_EMU_SANITIZED
    // The sanitizers track one stack per OS thread; switching stacks under
    // them gives false reports, and races need real threads anyway.
    std::fprintf(stderr, "ak_emu: AK_EMU_MODE=fibers ignored in a sanitizer build\n");
    return false;
#else
    return true;
#endif
  }();
  return value;
}

enum class ThreadState : std::uint8_t { kNotStarted, kRunning, kAtBarrier, kAtWarpOp, kExited };

// What one emulated thread is doing; read by the watchdog's hang report.
struct ThreadStatus {
  ThreadState state = ThreadState::kNotStarted;
  const char* op = "";
  Site site{};
};

// How a warp-synchronous operation combines the lanes' contributions.
enum class WarpReduce : std::uint8_t {
  kNone,     // __syncwarp
  kShuffle,  // value of one source lane
  kBallot,   // bit per lane of (value != 0)
  kAny,
  kAll,
  kAdd,      // __reduce_add_sync (wrap-around, signed or unsigned alike)
  kMinU,
  kMaxU,
  kMinI,
  kMaxI,
  kAnd,
  kOr,
  kXor,
};

// How a block-wide barrier combines predicates (__syncthreads_count etc.).
enum class BarrierReduce : std::uint8_t { kNone, kCount, kAnd, kOr };

// Per-warp rendezvous state. Two value slots, selected by generation parity:
// a lane released from generation g may enter generation g+1 and deposit its
// value while slower lanes still read the results of g; generation g+2 cannot
// start before all of them have left g, so two slots suffice.
struct Warp {
  unsigned lanes_mask = 0;  // lanes that exist (the last warp may be partial)
  unsigned live_mask = 0;   // existing lanes that have not returned yet
  unsigned arrived = 0;
  std::uint64_t generation = 0;
  const char* op = "";
  Site site{};
  bool error_reported = false;  // one divergence message per generation
  std::uint64_t values[2][kWarpSize]{};
  unsigned contributed[2]{};
  std::condition_variable cv;
  unsigned char sync_token[2]{};  // per generation parity; see EngineSection
};

struct LaunchInfo {
  const char* kernel_name = "?";
  Site site{};
  dim3 grid{};
  dim3 block{};
  std::size_t smem_bytes = 0;

  std::string describe() const {
    return std::string("AK_LAUNCH(") + kernel_name + ") at " + site.str() + " [grid " +
           dim_str(grid) + ", block " + dim_str(block) + ", dynamic smem " +
           std::to_string(smem_bytes) + " B]";
  }
};

// Errors of one launch; guarded by the running block's mutex.
struct ErrorLog {
  std::vector<std::string> messages;
  std::size_t suppressed = 0;

  void add(std::string message) {
    if (messages.size() < kMaxRecordedErrors) {
      messages.push_back(std::move(message));
    } else {
      ++suppressed;
    }
  }
  bool empty() const { return messages.empty() && suppressed == 0; }
};

class Block;

// cp.async (emu_device.h): one emulated thread's copies not yet waited for, in
// issue order. The copy's bytes are taken from global memory when it is issued
// and land in shared memory at the wait that completes its group. One queue
// per thread slot of the running block (blocks run one at a time), emptied
// when a thread starts; a thread that returns with copies pending is an error.
struct AsyncCopy {
  unsigned char* dst;
  unsigned char data[16];
  unsigned bytes;
  std::uint64_t group;  // commit group, kUncommitted before cp.async.commit_group
};
struct AsyncCopyQueue {
  static constexpr std::uint64_t kUncommitted = ~std::uint64_t{0};
  std::vector<AsyncCopy> pending;
  std::uint64_t committed = 0;  // groups committed so far

  void clear() {
    pending.clear();
    committed = 0;
  }
};
inline AsyncCopyQueue async_copy_queues[1024];

// Switches from the running fiber back to its scheduler (emu_fiber.h).
void fiber_yield();

// The block the calling OS thread is currently emulating a thread of.
inline thread_local Block* tl_block = nullptr;
inline thread_local unsigned tl_tid = 0;  // linear thread id within the block

// ---------------------------------------------------------------------------
// Block: the state shared by the threads of the block being run
// ---------------------------------------------------------------------------

class Block {
 public:
  Block(const LaunchInfo& info, uint3 block_idx, const std::function<void()>& body,
        unsigned char* dynamic_smem, ErrorLog& errors, bool fibers, bool counted = false)
      : fibers_(fibers),
        info_(info),
        block_idx_(block_idx),
        body_(body),
        dynamic_smem_(dynamic_smem),
        errors_(errors),
        nthreads_(info.block.x * info.block.y * info.block.z),
        live_(nthreads_),
        status_(nthreads_),
        warps_((nthreads_ + kWarpSize - 1) / kWarpSize),
        access_logs_(counted ? nthreads_ : 0) {
    for (std::size_t w = 0; w < warps_.size(); ++w) {
      const unsigned lanes = std::min(kWarpSize, nthreads_ - static_cast<unsigned>(w) * kWarpSize);
      warps_[w].lanes_mask = lanes == kWarpSize ? kFullMask : (1u << lanes) - 1u;
      warps_[w].live_mask = warps_[w].lanes_mask;
    }
  }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  unsigned thread_count() const { return nthreads_; }
  unsigned char* dynamic_shared() const { return dynamic_smem_; }

  // Whether [address, address + bytes) lies in one of the block's static shared
  // arrays or in its dynamic shared memory.
  bool is_shared(const void* address, std::size_t bytes) {
    const auto start = reinterpret_cast<std::uintptr_t>(address);
    const auto dynamic = reinterpret_cast<std::uintptr_t>(dynamic_smem_);
    if (start >= dynamic && start + bytes <= dynamic + info_.smem_bytes) return true;
    EngineSection section;
    std::lock_guard<std::mutex> lock(m_);
    for (const auto& [first, size] : shared_ranges_.ranges) {
      if (start >= first && start + bytes <= first + size) return true;
    }
    return false;
  }
  bool uses_fibers() const { return fibers_; }

  // Points the calling OS thread's CUDA built-ins at thread `tid`. Fibers
  // share one OS thread, so the scheduler calls this before every switch.
  void enter_thread_context(unsigned tid) {
    const dim3& bd = info_.block;
    threadIdx = uint3{tid % bd.x, (tid / bd.x) % bd.y, tid / (bd.x * bd.y)};
    blockIdx = block_idx_;
    blockDim = bd;
    gridDim = info_.grid;
    tl_block = this;
    tl_tid = tid;
    tl_access_log = access_logs_.empty() ? nullptr : &access_logs_[tid];
  }

  // Body of one emulated thread; called on a pool thread or in a fiber.
  void run_thread(unsigned tid) noexcept {
    enter_thread_context(tid);
    {
      EngineSection section;
      std::lock_guard<std::mutex> lock(m_);
      status_[tid].state = ThreadState::kRunning;
      ++progress_;
    }
    async_copy_queues[tid].clear();
    try {
      body_();
      if (!async_copy_queues[tid].pending.empty()) {
        record_error(thread_str(tid) + " returned with " +
                     std::to_string(async_copy_queues[tid].pending.size()) +
                     " cp.async copies not waited for (cp.async.wait_group / wait_all)");
      }
    } catch (const std::exception& e) {
      record_error(thread_str(tid) + " threw: " + e.what());
    } catch (...) {
      record_error(thread_str(tid) + " threw a non-standard exception");
    }
    async_copy_queues[tid].clear();
    tl_block = nullptr;
    tl_access_log = nullptr;
    thread_exit(tid);  // last access to *this from this thread
  }

  // Launcher side: wait until every thread has returned. Doubles as the
  // watchdog: if no thread starts, reaches a barrier or warp operation, or
  // returns for AK_EMU_TIMEOUT_S seconds, print where everyone is and abort
  // (a hung test should fail CI, not stall it).
  void wait_until_done() {
    using clock = std::chrono::steady_clock;
    const double timeout = watchdog_timeout_s();
    const auto slice = std::chrono::duration<double>(std::min(0.25, timeout / 4.0));
    std::unique_lock<std::mutex> lock(m_);
    std::uint64_t seen = progress_;
    auto last_change = clock::now();
    while (!finished_locked()) {
      done_cv_.wait_for(lock, slice);
      if (finished_locked()) break;
      const auto now = clock::now();
      if (progress_ != seen) {
        seen = progress_;
        last_change = now;
      } else if (std::chrono::duration<double>(now - last_change).count() >= timeout) {
        const std::string report = hang_report_locked(timeout);
        std::fputs(report.c_str(), stderr);
        std::fflush(stderr);
        std::abort();
      }
    }
    EngineSection::acquire(&exit_token_);  // everything the threads did
  }

  // __syncthreads and its predicate-reducing variants.
  int barrier(const char* op, int predicate, BarrierReduce how, Site site) {
    const void* token = nullptr;
    const int result = barrier_in_section(op, predicate, how, site, token);
    EngineSection::acquire(token);  // what every thread did before arriving
    return result;
  }

  // A warp-synchronous operation: deposit `bits`, wait for every live lane of
  // the warp, combine. For kShuffle, `src_lane` is the lane whose value this
  // lane receives (the caller has already applied CUDA's width rules).
  std::uint64_t warp_op(const char* op, unsigned mask, std::uint64_t bits, unsigned src_lane,
                        WarpReduce how, Site site) {
    const void* token = nullptr;
    const std::uint64_t result = warp_op_in_section(op, mask, bits, src_lane, how, site, token);
    EngineSection::acquire(token);  // what every lane did before arriving
    return result;
  }

 private:
  // The bookkeeping of barrier(); `token` receives this generation's token.
  int barrier_in_section(const char* op, int predicate, BarrierReduce how, Site site,
                         const void*& token) {
    const unsigned tid = tl_tid;
    EngineSection section;
    std::unique_lock<std::mutex> lock(m_);
    ++progress_;
    status_[tid] = ThreadStatus{ThreadState::kAtBarrier, op, site};
    const std::uint64_t gen = bar_generation_;
    const unsigned slot = static_cast<unsigned>(gen & 1u);
    token = &bar_token_[slot];
    section.release_from_inside(token);
    if (bar_arrived_ == 0) {
      bar_site_ = site;
      bar_op_ = op;
      bar_first_tid_ = tid;
      bar_error_reported_ = false;
      bar_count_[slot] = 0;
    } else if (!(site == bar_site_) && !bar_error_reported_) {
      // Threads of one barrier generation at different call sites: on a GPU
      // this is undefined behaviour (a hang or silently wrong pairing).
      bar_error_reported_ = true;
      record_error_locked("divergent barrier: " + thread_str(tid) + " reached " + op + " at " +
                          site.str() + " while " + thread_str(bar_first_tid_) + " waits at " +
                          bar_op_ + " at " + bar_site_.str() + " (barrier generation " +
                          std::to_string(gen) + ")");
    }
    bar_count_[slot] += predicate != 0 ? 1u : 0u;
    if (++bar_arrived_ == live_) {
      release_barrier_locked();
    } else {
      wait_locked(lock, bar_cv_, [&] { return bar_generation_ != gen; });
    }
    status_[tid].state = ThreadState::kRunning;
    const unsigned count = bar_count_[slot];
    switch (how) {
      case BarrierReduce::kCount: return static_cast<int>(count);
      case BarrierReduce::kAnd: return count == bar_participants_[slot] ? 1 : 0;
      case BarrierReduce::kOr: return count != 0 ? 1 : 0;
      case BarrierReduce::kNone: break;
    }
    return 0;
  }

  // The bookkeeping of warp_op(); `token` receives this generation's token.
  std::uint64_t warp_op_in_section(const char* op, unsigned mask, std::uint64_t bits,
                                   unsigned src_lane, WarpReduce how, Site site,
                                   const void*& token) {
    const unsigned tid = tl_tid;
    const unsigned lane = tid % kWarpSize;
    EngineSection section;
    Warp& w = warps_[tid / kWarpSize];
    std::unique_lock<std::mutex> lock(m_);
    ++progress_;
    status_[tid] = ThreadStatus{ThreadState::kAtWarpOp, op, site};
    const std::uint64_t gen = w.generation;
    const unsigned slot = static_cast<unsigned>(gen & 1u);
    token = &w.sync_token[slot];
    section.release_from_inside(token);
    if (w.arrived == 0) {
      w.op = op;
      w.site = site;
      w.error_reported = false;
      w.contributed[slot] = 0;
    }
    if (mask != kFullMask && mask != w.lanes_mask && !w.error_reported) {
      // Sub-warp masks need per-mask rendezvous groups the emulator does not
      // model; fail loudly rather than emulate them wrongly.
      w.error_reported = true;
      record_error_locked(std::string(op) + " at " + site.str() + " by " + thread_str(tid) +
                          ": mask 0x" + hex(mask) + " is not the full warp (0x" +
                          hex(w.lanes_mask) + "); partial masks are not supported");
    } else if (std::strcmp(op, w.op) != 0 && !w.error_reported) {
      // Different call sites of the same intrinsic are legal since Volta's
      // independent thread scheduling; different intrinsics are not.
      w.error_reported = true;
      record_error_locked("divergent warp: " + thread_str(tid) + " reached " + op + " at " +
                          site.str() + " while lanes of its warp wait in " + w.op + " at " +
                          w.site.str());
    }
    w.values[slot][lane] = bits;
    w.contributed[slot] |= 1u << lane;
    if (++w.arrived == static_cast<unsigned>(std::popcount(w.live_mask))) {
      release_warp_locked(w);
    } else {
      wait_locked(lock, w.cv, [&] { return w.generation != gen; });
    }
    status_[tid].state = ThreadState::kRunning;
    return combine_locked(w.values[slot], w.contributed[slot], lane, src_lane, how, op, site);
  }

 public:
  // Lanes of the caller's warp that have not returned from the kernel.
  unsigned active_mask() {
    EngineSection section;
    std::lock_guard<std::mutex> lock(m_);
    return warps_[tl_tid / kWarpSize].live_mask;
  }

  // AK_SHARED_ARRAY: the first thread of the block to reach the declaration
  // poisons the (function-local static) array; the others find it registered.
  // Under the mutex, so no thread proceeds past the declaration before the
  // poison is written, and ThreadSanitizer sees the ordering.
  void register_static_shared(void* address, std::size_t bytes) {
    EngineSection section;  // the poison is no write of any emulated thread
    std::lock_guard<std::mutex> lock(m_);
    if (poisoned_static_.insert(address).second) {
      std::memset(address, 0xff, bytes);
      shared_ranges_.ranges.emplace_back(reinterpret_cast<std::uintptr_t>(address), bytes);
    }
  }

  // Counters (emu_counters.h): folds this finished block's access logs into
  // `out`. Called by the launcher after wait_until_done().
  void count_into(LaunchCounters& out) {
    SharedRanges shared = shared_ranges_;
    shared.ranges.emplace_back(reinterpret_cast<std::uintptr_t>(dynamic_smem_), info_.smem_bytes);
    count_block(access_logs_, shared, bar_generation_, out);
  }

  void record_error(std::string message) {
    EngineSection section;
    std::lock_guard<std::mutex> lock(m_);
    record_error_locked(std::move(message));
  }

  // Fiber mode: the scheduler's bookkeeping (emu_fiber.h).
  std::uint64_t progress() {
    std::lock_guard<std::mutex> lock(m_);
    return progress_;
  }
  void run_fibers();  // runs every thread of the block as a fiber
  [[noreturn]] void abort_deadlock() {
    std::unique_lock<std::mutex> lock(m_);
    const std::string report = hang_report_locked(0.0, /*deadlock=*/true);
    std::fputs(report.c_str(), stderr);
    std::fflush(stderr);
    std::abort();
  }

 private:
  // Blocks the calling emulated thread until `ready()`; `lock` holds m_.
  template <class Ready>
  void wait_locked(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Ready ready) {
    if (!fibers_) {
      cv.wait(lock, ready);
      return;
    }
    // A fiber must not keep the mutex while other fibers run on this thread.
    while (!ready()) {
      lock.unlock();
      fiber_yield();
      lock.lock();
    }
  }

  bool finished_locked() const { return fibers_ ? fibers_done_ : live_ == 0; }
  static std::string hex(unsigned v) {
    char buffer[16];
    std::snprintf(buffer, sizeof buffer, "%08x", v);
    return buffer;
  }

  std::string thread_str(unsigned tid) const {
    const dim3& bd = info_.block;
    return "thread " + dim_str(uint3{tid % bd.x, (tid / bd.x) % bd.y, tid / (bd.x * bd.y)}) +
           " of block " + dim_str(block_idx_);
  }

  void record_error_locked(std::string message) { errors_.add(std::move(message)); }

  void release_barrier_locked() {
    bar_participants_[bar_generation_ & 1u] = bar_arrived_;
    bar_arrived_ = 0;
    ++bar_generation_;
    bar_cv_.notify_all();
  }

  static void release_warp_locked(Warp& w) {
    w.arrived = 0;
    ++w.generation;
    w.cv.notify_all();
  }

  std::uint64_t combine_locked(const std::uint64_t* values, unsigned contributed, unsigned lane,
                               unsigned src_lane, WarpReduce how, const char* op, Site site) {
    std::uint64_t acc = 0;
    switch (how) {
      case WarpReduce::kNone: return 0;
      case WarpReduce::kShuffle:
        if (src_lane >= kWarpSize || ((contributed >> src_lane) & 1u) == 0) {
          // Reading a lane that does not exist or has returned is undefined
          // on a GPU; report it and hand back the caller's own value.
          record_error_locked(std::string(op) + " at " + site.str() + " by " +
                              thread_str(tl_tid) + " reads lane " + std::to_string(src_lane) +
                              ", which is not active");
          return values[lane];
        }
        return values[src_lane];
      case WarpReduce::kBallot:
        for (unsigned l = 0; l < kWarpSize; ++l) {
          if (((contributed >> l) & 1u) != 0 && values[l] != 0) acc |= std::uint64_t{1} << l;
        }
        return acc;
      case WarpReduce::kAny:
      case WarpReduce::kAll: {
        bool any = false, all = true;
        for (unsigned l = 0; l < kWarpSize; ++l) {
          if (((contributed >> l) & 1u) == 0) continue;
          any = any || values[l] != 0;
          all = all && values[l] != 0;
        }
        return (how == WarpReduce::kAny ? any : all) ? 1 : 0;
      }
      default: break;
    }
    // Integer reductions over the contributing lanes (values are 32-bit).
    bool first = true;
    for (unsigned l = 0; l < kWarpSize; ++l) {
      if (((contributed >> l) & 1u) == 0) continue;
      const auto u = static_cast<std::uint32_t>(values[l]);
      const auto i = static_cast<std::int32_t>(u);
      auto a = static_cast<std::uint32_t>(acc);
      if (first) {
        a = u;
        first = false;
      } else {
        switch (how) {
          case WarpReduce::kAdd: a += u; break;
          case WarpReduce::kMinU: a = std::min(a, u); break;
          case WarpReduce::kMaxU: a = std::max(a, u); break;
          case WarpReduce::kMinI:
            a = static_cast<std::uint32_t>(std::min(static_cast<std::int32_t>(a), i));
            break;
          case WarpReduce::kMaxI:
            a = static_cast<std::uint32_t>(std::max(static_cast<std::int32_t>(a), i));
            break;
          case WarpReduce::kAnd: a &= u; break;
          case WarpReduce::kOr: a |= u; break;
          case WarpReduce::kXor: a ^= u; break;
          default: break;
        }
      }
      acc = a;
    }
    return acc;
  }

  // A returning thread drops out of barriers and warp operations, as exited
  // threads do on the GPU; it may be the one the others were waiting for.
  void thread_exit(unsigned tid) {
    EngineSection::release(&exit_token_);  // to the launcher only
    EngineSection section;
    std::lock_guard<std::mutex> lock(m_);
    ++progress_;
    status_[tid].state = ThreadState::kExited;
    --live_;
    if (bar_arrived_ != 0 && bar_arrived_ == live_) release_barrier_locked();
    Warp& w = warps_[tid / kWarpSize];
    w.live_mask &= ~(1u << (tid % kWarpSize));
    if (w.arrived != 0 && w.arrived == static_cast<unsigned>(std::popcount(w.live_mask))) {
      release_warp_locked(w);
    }
    // Notified under the lock: once the launcher sees the block finished it
    // destroys this Block, so nothing may touch it after the unlock. (With
    // fibers the scheduler reports completion after its last switch.)
    if (finished_locked()) done_cv_.notify_all();
  }

  std::string hang_report_locked(double timeout, bool deadlock = false) const {
    // Group the threads by what they are doing, so 1024 stuck threads give a
    // few lines rather than a thousand.
    std::map<std::string, std::vector<unsigned>> groups;
    for (unsigned tid = 0; tid < nthreads_; ++tid) {
      const ThreadStatus& s = status_[tid];
      std::string what;
      switch (s.state) {
        case ThreadState::kNotStarted: what = "not started yet"; break;
        case ThreadState::kRunning:
          what = "running, not at any barrier or warp operation (busy, spinning or in an "
                 "infinite loop)";
          break;
        case ThreadState::kAtBarrier:
        case ThreadState::kAtWarpOp:
          what = std::string("waiting in ") + s.op + " at " + s.site.str() + " (in " +
                 s.site.function + ")";
          break;
        case ThreadState::kExited: continue;
      }
      groups[what].push_back(tid);
    }
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f", timeout);
    std::string out =
        deadlock ? std::string("\nak_emu: deadlock: every remaining thread waits for threads "
                               "that can never arrive")
                 : std::string("\nak_emu watchdog: no emulated thread made progress for ") +
                       seconds + " s (AK_EMU_TIMEOUT_S)";
    out += " in block " + dim_str(block_idx_) + " of " + info_.describe() + "\n";
    for (const auto& [what, tids] : groups) {
      out += "  " + std::to_string(tids.size()) + " thread(s) " + what + ":";
      const dim3& bd = info_.block;
      for (std::size_t k = 0; k < tids.size() && k < 8; ++k) {
        const unsigned t = tids[k];
        out += " " + dim_str(uint3{t % bd.x, (t / bd.x) % bd.y, t / (bd.x * bd.y)});
      }
      if (tids.size() > 8) out += " ...";
      out += "\n";
    }
    out += "ak_emu watchdog: " + std::to_string(nthreads_ - live_) +
           " thread(s) had returned; aborting so the run fails instead of hanging\n";
    return out;
  }

  const bool fibers_;
  const LaunchInfo& info_;
  const uint3 block_idx_;
  const std::function<void()>& body_;
  unsigned char* const dynamic_smem_;
  ErrorLog& errors_;
  const unsigned nthreads_;

  std::mutex m_;  // guards everything below
  std::condition_variable bar_cv_;
  std::condition_variable done_cv_;
  unsigned live_;                // threads that have not returned
  bool fibers_done_ = false;     // fiber mode: the scheduler has finished
  std::uint64_t progress_ = 0;   // bumped on every start/arrival/return (watchdog)
  std::vector<ThreadStatus> status_;
  std::vector<Warp> warps_;
  std::unordered_set<const void*> poisoned_static_;
  SharedRanges shared_ranges_;          // static shared arrays of this block
  std::vector<AccessLog> access_logs_;  // per thread; empty when not counting
  // Barrier state; per-generation results live in parity slots (see Warp).
  unsigned bar_arrived_ = 0;
  std::uint64_t bar_generation_ = 0;
  Site bar_site_{};
  const char* bar_op_ = "";
  unsigned bar_first_tid_ = 0;
  bool bar_error_reported_ = false;
  unsigned bar_count_[2]{};
  unsigned bar_participants_[2]{};
  // Addresses ThreadSanitizer synchronises on (see EngineSection); never read.
  unsigned char bar_token_[2]{};
  unsigned char exit_token_ = 0;
};

// The running block, for the device-side API; calling a device intrinsic from
// host code is a programming error of the test, not of the kernel.
inline Block& current_block(const char* what) {
  if (tl_block == nullptr) {
    throw std::logic_error(std::string(what) + " called outside a kernel launched by AK_LAUNCH");
  }
  return *tl_block;
}

}  // namespace ak_emu

#include "emu_fiber.h"

namespace ak_emu {

// ---------------------------------------------------------------------------
// Thread pool: OS threads reused across blocks and launches
// ---------------------------------------------------------------------------

class Pool {
 public:
  static Pool& instance() {
    static Pool pool;
    return pool;
  }

  // Starts threads 0..n-1 of `block` (or, in fiber mode, one worker that runs
  // them all); returns without waiting.
  void dispatch(Block& block) {
    const unsigned n = block.uses_fibers() ? 1 : block.thread_count();
    while (workers_.size() < n) {
      workers_.push_back(std::make_unique<Worker>(static_cast<unsigned>(workers_.size())));
    }
    for (unsigned i = 0; i < n; ++i) workers_[i]->assign(&block);
  }

  ~Pool() {
    for (auto& w : workers_) w->stop();
  }

 private:
  class Worker {
   public:
    explicit Worker(unsigned index) : index_(index), thread_([this] { loop(); }) {}
    ~Worker() {
      if (thread_.joinable()) thread_.join();
    }

    void assign(Block* block) {
      {
        std::lock_guard<std::mutex> lock(m_);
        block_ = block;
        ++generation_;
      }
      cv_.notify_one();
    }

    void stop() {
      {
        std::lock_guard<std::mutex> lock(m_);
        stopping_ = true;
      }
      cv_.notify_one();
      thread_.join();
    }

   private:
    void loop() {
      std::uint64_t seen = 0;
      for (;;) {
        Block* block = nullptr;
        {
          std::unique_lock<std::mutex> lock(m_);
          cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
          if (stopping_) return;
          seen = generation_;
          block = block_;
        }
        if (block->uses_fibers()) {
          block->run_fibers();
        } else {
          block->run_thread(index_);
        }
      }
    }

    const unsigned index_;
    std::mutex m_;
    std::condition_variable cv_;
    Block* block_ = nullptr;
    std::uint64_t generation_ = 0;
    bool stopping_ = false;
    std::thread thread_;  // last: started once the members above exist
  };

  Pool() = default;
  std::vector<std::unique_ptr<Worker>> workers_;
};

// ---------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------

// Launches are serialised: static shared arrays and the pool are per process.
inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// Dynamic shared memory of a launch: exactly `bytes` on the heap (so
// AddressSanitizer catches overruns), 16-byte aligned like CUDA's.
class DynamicSmem {
 public:
  explicit DynamicSmem(std::size_t bytes)
      : bytes_(bytes),
        data_(static_cast<unsigned char*>(::operator new(bytes, std::align_val_t{16}))) {}
  ~DynamicSmem() { ::operator delete(data_, std::align_val_t{16}); }
  DynamicSmem(const DynamicSmem&) = delete;
  DynamicSmem& operator=(const DynamicSmem&) = delete;
  unsigned char* data() const { return data_; }
  void poison() { std::memset(data_, 0xff, bytes_); }

 private:
  std::size_t bytes_;
  unsigned char* data_;
};

inline std::vector<std::string> check_configuration(const LaunchInfo& info) {
  std::vector<std::string> problems;
  const dim3& g = info.grid;
  const dim3& b = info.block;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) {
    problems.emplace_back("zero-sized grid or block (cudaErrorInvalidConfiguration)");
    return problems;
  }
  const std::uint64_t threads = std::uint64_t{b.x} * b.y * b.z;
  if (threads > kMaxThreadsPerBlock || b.x > 1024 || b.y > 1024 || b.z > 64) {
    problems.emplace_back("block " + dim_str(b) + " has " + std::to_string(threads) +
                          " threads; CUDA allows at most 1024 (and 1024 x 1024 x 64 per axis)");
  }
  if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    problems.emplace_back("grid " + dim_str(g) + " exceeds CUDA's (2^31-1, 65535, 65535)");
  }
  if (info.smem_bytes > kMaxDynamicSharedBytes) {
    problems.emplace_back("dynamic shared memory of " + std::to_string(info.smem_bytes) +
                          " bytes exceeds the 227 KiB a block can have");
  }
  return problems;
}

[[noreturn]] inline void throw_launch_error(const LaunchInfo& info, const ErrorLog& log,
                                            const std::string& note) {
  std::string message = info.describe() + " failed:";
  for (const std::string& m : log.messages) message += "\n  - " + m;
  if (log.suppressed != 0) {
    message += "\n  (" + std::to_string(log.suppressed) + " further error(s) not shown)";
  }
  if (!note.empty()) message += "\n  " + note;
  throw std::runtime_error(message);
}

inline std::string kernel_symbol(const void* kernel);  // launch record, below

// Counters (emu_counters.h): between counters_begin() and counters_end()
// every launch is counted; with sample_blocks > 0 a launch of more blocks
// runs only that many of them (its outputs are then incomplete). Called by
// the host between launches; a session already begun is restarted.
inline void counters_begin(std::uint64_t sample_blocks = 0) {
  std::lock_guard<std::mutex> serial(launch_mutex());
  CounterSession& session = counter_session();
  session.active = true;
  session.sample_blocks = sample_blocks;
  session.launches.clear();
}

// Ends the session: the counts of every launch since counters_begin(), as
// JSON (see counters_json); every block runs again afterwards.
inline std::string counters_end() {
  std::lock_guard<std::mutex> serial(launch_mutex());
  CounterSession& session = counter_session();
  if (!session.active) throw std::logic_error("counters_end() without counters_begin()");
  const std::string json = counters_json(session.launches);
  session = CounterSession{};
  return json;
}

// Runs every block of the grid, one after another, each with one OS thread
// per CUDA thread; `body` runs the kernel in the calling thread. Throws
// std::runtime_error describing every recorded error.
inline void run_grid(const LaunchInfo& info, const std::function<void()>& body,
                     const void* kernel) {
  if (tl_block != nullptr) {
    throw std::logic_error("AK_LAUNCH from inside a kernel (dynamic parallelism) is not emulated");
  }
  ErrorLog log;
  for (std::string& p : check_configuration(info)) log.add(std::move(p));
  if (!log.empty()) throw_launch_error(info, log, "no block was run");

  std::lock_guard<std::mutex> serial(launch_mutex());
  DynamicSmem smem(info.smem_bytes);
  const bool fibers = fiber_mode();
  const dim3& g = info.grid;
  CounterSession& session = counter_session();
  const std::uint64_t total = std::uint64_t{g.x} * g.y * g.z;
  // Without counters every block runs; with them, possibly a sample.
  LaunchCounters counted;
  if (session.active) {
    counted.kernel = kernel_symbol(kernel);
    counted.grid = g;
    counted.block = info.block;
    counted.blocks_total = total;
    counted.blocks_run = sampled_blocks(total, session.sample_blocks);
  }
  std::size_t next_sampled = 0;
  for (std::uint64_t linear = 0; linear < total; ++linear) {
    if (session.active) {
      if (next_sampled == counted.blocks_run.size()) break;
      if (counted.blocks_run[next_sampled] != linear) continue;
      ++next_sampled;
    }
    const uint3 idx{static_cast<unsigned>(linear % g.x),
                    static_cast<unsigned>((linear / g.x) % g.y),
                    static_cast<unsigned>(linear / (std::uint64_t{g.x} * g.y))};
    smem.poison();  // fresh garbage per block, as a GPU would show
    Block block(info, idx, body, smem.data(), log, fibers, session.active);
    Pool::instance().dispatch(block);
    block.wait_until_done();
    if (!log.empty()) {
      // A broken block rarely fails alone; stopping keeps the report short.
      throw_launch_error(info, log,
                         "(stopped after block " + dim_str(idx) + "; later blocks were not run)");
    }
    if (session.active) block.count_into(counted);
  }
  if (session.active) session.launches.push_back(std::move(counted));
}

// ---------------------------------------------------------------------------
// Launch record: which kernels have run (for the tests' kernel coverage check)
// ---------------------------------------------------------------------------

// Addresses of the kernels whose launches completed without an error, for
// the whole process. Kept as addresses (cheap per launch); names are only
// resolved when asked for.
inline std::mutex& launched_mutex() {
  static std::mutex m;
  return m;
}
inline std::set<const void*>& launched_set() {
  static std::set<const void*> kernels;
  return kernels;
}

inline void record_launch(const void* kernel) {
  std::lock_guard<std::mutex> lock(launched_mutex());
  launched_set().insert(kernel);
}

// "void ns::k<float, true>(float const*, int)" -> "k": drops the parameter
// list, then template arguments, then return type and qualifiers.
inline std::string kernel_base_name(const std::string& demangled) {
  std::string s = demangled;
  if (!s.empty() && s.back() == ')') {
    int depth = 0;
    for (std::size_t i = s.size(); i-- > 0;) {
      if (s[i] == ')') ++depth;
      if (s[i] == '(' && --depth == 0) {
        s.resize(i);
        break;
      }
    }
  }
  if (!s.empty() && s.back() == '>') {
    int depth = 0;
    for (std::size_t i = s.size(); i-- > 0;) {
      if (s[i] == '>') ++depth;
      if (s[i] == '<' && --depth == 0) {
        s.resize(i);
        break;
      }
    }
  }
  const std::size_t colon = s.rfind("::");
  const std::size_t space = s.rfind(' ');
  std::size_t start = 0;
  if (colon != std::string::npos) start = colon + 2;
  if (space != std::string::npos && space + 1 > start) start = space + 1;
  return s.substr(start);
}

// The full demangled signature of a kernel, from the dynamic symbol table of
// the binary holding it (kernels in a shared library are exported). An address
// that is not exactly the start of an exported symbol (e.g. a kernel in an
// executable linked without -rdynamic) gives "<unresolved 0x...>", never the
// name of a neighbouring symbol.
inline std::string kernel_symbol(const void* kernel) {
  Dl_info info{};
  if (dladdr(kernel, &info) == 0 || info.dli_sname == nullptr || info.dli_saddr != kernel) {
    char buffer[64];
    std::snprintf(buffer, sizeof(buffer), "<unresolved %p>", kernel);
    return buffer;
  }
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
  std::free(demangled);
  return name;
}

// Base names (e.g. "lrn_forward_kernel") of every kernel launched so far,
// sorted, each once; a kernel that cannot be resolved keeps its
// "<unresolved 0x...>" text, so it can never pass for another kernel.
inline std::vector<std::string> launched_kernels() {
  std::set<std::string> names;
  std::lock_guard<std::mutex> lock(launched_mutex());
  for (const void* kernel : launched_set()) {
    const std::string symbol = kernel_symbol(kernel);
    names.insert(symbol.starts_with("<unresolved") ? symbol : kernel_base_name(symbol));
  }
  return {names.begin(), names.end()};
}

// The object AK_LAUNCH(...) creates; calling it with the kernel arguments runs
// the grid synchronously. Arguments are converted to the kernel's parameter
// types once, as a CUDA launch does, and every thread receives a copy.
template <class... Params>
class Launch {
 public:
  template <class Stream>
  Launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem_bytes, Stream&&,
         const char* kernel_name, std::source_location loc)
      : kernel_(kernel), info_{kernel_name, Site::from(loc), grid, block, smem_bytes} {}

  template <class... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params),
                  "AK_LAUNCH: wrong number of kernel arguments");
    const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    const std::function<void()> body = [&] { std::apply(kernel_, params); };
    run_grid(info_, body, reinterpret_cast<const void*>(kernel_));
    // Function pointer to object pointer: conditionally supported, fine on
    // the POSIX targets the emulator runs on.
    record_launch(reinterpret_cast<const void*>(kernel_));
  }

 private:
  void (*kernel_)(Params...);
  LaunchInfo info_;
};

template <class... Params, class Stream>
Launch(void (*)(Params...), dim3, dim3, std::size_t, Stream&&, const char*, std::source_location)
    -> Launch<Params...>;

}  // namespace ak_emu
