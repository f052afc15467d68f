// Fiber mode of the CUDA emulator (AK_EMU_MODE=fibers).
//
// Every thread of a block becomes a fiber (ucontext) on one pool thread. A
// fiber runs until it has to wait at a barrier or warp operation, or returns;
// the scheduler then resumes the next fiber, round-robin. That replaces two
// OS context switches and a contended mutex per thread and barrier with two
// user-space switches, which makes large emulated tests affordable.
//
// The same Block code does the bookkeeping, so divergence checks, poisoning
// and error reporting are identical. Differences from the thread mode:
//   * threads run one at a time in a fixed order, so data races cannot show
//     (use the ThreadSanitizer build, which always uses OS threads);
//   * a state where every remaining thread waits is a certain deadlock and is
//     reported at once; a thread spinning forever is still caught by the
//     watchdog of the launching thread after AK_EMU_TIMEOUT_S;
//   * each fiber gets a kFiberStackBytes stack with a guard page below it.
//
// Included by emu_runtime.h after the Block class; not meant to be used alone.
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

namespace ak_emu {

// Plenty for kernel code (registers and small local arrays), yet only touched
// pages are ever backed by memory.
inline constexpr std::size_t kFiberStackBytes = 256 * 1024;

// A fiber stack with an inaccessible guard page below it, so that a stack
// overflow faults instead of silently corrupting the neighbouring stack.
class FiberStack {
 public:
  FiberStack() {
    page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    mapping_ = mmap(nullptr, kFiberStackBytes + page_, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping_ == MAP_FAILED) throw std::bad_alloc();
    if (mprotect(mapping_, page_, PROT_NONE) != 0) {
      munmap(mapping_, kFiberStackBytes + page_);
      throw std::bad_alloc();
    }
  }
  ~FiberStack() { munmap(mapping_, kFiberStackBytes + page_); }
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;

  void* bottom() const { return static_cast<char*>(mapping_) + page_; }

 private:
  std::size_t page_ = 0;
  void* mapping_ = nullptr;
};

// Runs all threads of one block as fibers on the calling OS thread.
class FiberScheduler {
 public:
  explicit FiberScheduler(Block& block) : block_(block), fibers_(block.thread_count()) {}
  FiberScheduler(const FiberScheduler&) = delete;
  FiberScheduler& operator=(const FiberScheduler&) = delete;

  void run() {
    const unsigned n = block_.thread_count();
    // Stacks are kept by the (single) pool thread that runs fibers and are
    // reused by every later block and launch.
    static thread_local std::vector<std::unique_ptr<FiberStack>> stacks;
    while (stacks.size() < n) stacks.push_back(std::make_unique<FiberStack>());

    const auto self = reinterpret_cast<std::uintptr_t>(this);
    for (unsigned tid = 0; tid < n; ++tid) {
      Fiber& f = fibers_[tid];
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = stacks[tid]->bottom();
      f.context.uc_stack.ss_size = kFiberStackBytes;
      f.context.uc_link = &scheduler_;  // where a returning fiber continues
      // makecontext passes int arguments: the pointer travels in two halves.
      makecontext(&f.context, reinterpret_cast<void (*)()>(&FiberScheduler::entry), 3,
                  static_cast<unsigned>(self >> 32), static_cast<unsigned>(self & 0xffffffffu),
                  tid);
    }

    FiberScheduler* const outer = tl_scheduler;
    tl_scheduler = this;
    unsigned remaining = n;
    while (remaining != 0) {
      const std::uint64_t before = block_.progress();
      for (unsigned tid = 0; tid < n; ++tid) {
        Fiber& f = fibers_[tid];
        if (f.finished) continue;
        current_ = tid;
        block_.enter_thread_context(tid);
        swapcontext(&scheduler_, &f.context);
        if (f.finished) --remaining;
      }
      // A whole round in which no thread started, arrived anywhere or
      // returned: everyone left is waiting for someone else. Certain deadlock.
      if (remaining != 0 && block_.progress() == before) block_.abort_deadlock();
    }
    tl_scheduler = outer;
  }

  // From inside a fiber: let the others run, come back later.
  void yield() { swapcontext(&fibers_[current_].context, &scheduler_); }

  static FiberScheduler* current() { return tl_scheduler; }

 private:
  struct Fiber {
    ucontext_t context{};
    bool finished = false;
  };

  static void entry(unsigned self_hi, unsigned self_lo, unsigned tid) {
    auto* self = reinterpret_cast<FiberScheduler*>((std::uintptr_t{self_hi} << 32) | self_lo);
    self->block_.run_thread(tid);  // noexcept: nothing unwinds across contexts
    self->fibers_[tid].finished = true;
    // Returning continues at uc_link, i.e. back in run().
  }

  static inline thread_local FiberScheduler* tl_scheduler = nullptr;

  Block& block_;
  std::vector<Fiber> fibers_;
  ucontext_t scheduler_{};
  unsigned current_ = 0;
};

inline void fiber_yield() {
  FiberScheduler* scheduler = FiberScheduler::current();
  if (scheduler == nullptr) {
    std::fputs("ak_emu: internal error: fiber_yield outside a fiber\n", stderr);
    std::abort();
  }
  scheduler->yield();
}

inline void Block::run_fibers() {
  FiberScheduler(*this).run();
  // Only now is no fiber using this Block any more; let the launcher go on.
  std::lock_guard<std::mutex> lock(m_);
  fibers_done_ = true;
  done_cv_.notify_all();
}

}  // namespace ak_emu
