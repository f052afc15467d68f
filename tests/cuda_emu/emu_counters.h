// Efficiency counters of the CUDA emulator: what a GPU profiler would count
// for the memory instructions, tensor-core steps and barriers of a kernel.
//
// Kernel code reaches memory through ak_ld / ak_st (csrc/kernels/cuda_compat.h),
// which are plain loads and stores under nvcc and, here, also append a record
// (call site, address, size) to the calling thread's log when counters are on.
// Off (the default), the cost is one thread_local pointer test per access.
//
// Grouping: the emulator runs lanes as separate threads, not in lockstep, so
// warp-level instructions are rebuilt after each block: the k-th execution of
// one call site by the lanes of one warp is one warp-level request (what SIMT
// would issue for converged code). Per request:
//   * global memory: 32-byte sectors touched, against the fewest sectors that
//     could hold the bytes the active lanes asked for (ideal sectors =
//     ceil(distinct bytes / 32)); coalescing efficiency = ideal / actual;
//   * shared memory: wavefronts = for each phase of the request, the largest
//     number of distinct 4-byte words any one of the 32 banks must deliver
//     (same-word broadcast is free); accesses of up to 4 bytes run as one
//     phase of 32 lanes, 8-byte accesses as two phases of 16 lanes, 16-byte
//     accesses as four phases of 8 lanes. Ideal wavefronts = ceil(distinct
//     words / 32), so a conflict-free 16-byte access costs 4 of 4;
//   * tensor-core steps (ak_mma_*): one instruction per warp, with its
//     multiply-adds (m16n8k16: 2048, m16n8k8: 1024).
// Bytes moved (the DRAM model): per block, the distinct 32-byte sectors its
// loads (and, separately, its stores) touch, summed over blocks: reuse inside
// a block is assumed to hit in cache, reuse across blocks to come from DRAM
// again. Barriers: __syncthreads generations per block, summed.
//
// Sampling: counters_begin(sample_blocks) with sample_blocks > 0 runs, in each
// launch of more blocks than that, only sample_blocks of them: linear block
// indices round(i * (B - 1) / (s - 1)) for i = 0..s-1 (the first, the last
// and evenly spaced ones; s = 1 runs block 0). Counts are reported as
// measured over the blocks run, with `scale` = B / blocks run to extrapolate
// them. The outputs of a sampled launch are incomplete: never compare them.
//
// Included by emu_runtime.h; not meant to be used alone.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <source_location>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <vector_types.h>

namespace ak_emu {

enum class AccessKind : std::uint8_t { kLoad, kStore, kMma };

// One access of one emulated thread. For kMma, `bytes` holds the
// instruction's multiply-adds.
struct AccessRecord {
  const char* file;
  std::uint32_t line;
  std::uint32_t column;
  std::uintptr_t address;
  std::uint32_t bytes;
  AccessKind kind;
};

using AccessLog = std::vector<AccessRecord>;

// The calling thread's log while it runs a counted block, else nullptr.
inline thread_local AccessLog* tl_access_log = nullptr;

inline void record_access(const void* address, std::size_t bytes, AccessKind kind,
                          const std::source_location& loc) {
  AccessLog* log = tl_access_log;
  if (log == nullptr) return;
  log->push_back(AccessRecord{loc.file_name(), static_cast<std::uint32_t>(loc.line()),
                              static_cast<std::uint32_t>(loc.column()),
                              reinterpret_cast<std::uintptr_t>(address),
                              static_cast<std::uint32_t>(bytes), kind});
}

inline constexpr unsigned kCountedWarp = 32;
inline constexpr unsigned kSectorBytes = 32;
inline constexpr unsigned kBanks = 32;
inline constexpr unsigned kBankBytes = 4;

enum class Space : std::uint8_t { kGlobal, kShared, kTensor };

// A call site and what it does there.
struct SiteKey {
  const char* file;
  std::uint32_t line;
  std::uint32_t column;
  AccessKind kind;
  Space space;

  friend bool operator<(const SiteKey& a, const SiteKey& b) {
    if (a.line != b.line) return a.line < b.line;
    if (a.column != b.column) return a.column < b.column;
    if (a.kind != b.kind) return a.kind < b.kind;
    if (a.space != b.space) return a.space < b.space;
    return std::strcmp(a.file, b.file) < 0;
  }
};

// Counts of one site over the blocks run (not extrapolated).
struct SiteStats {
  std::uint64_t requests = 0;          // warp-level instructions
  std::uint64_t lane_accesses = 0;     // thread-level accesses
  std::uint64_t requested_bytes = 0;   // sum over lanes of their access sizes
  std::uint64_t max_lane_bytes = 0;    // widest single access
  std::uint64_t sectors = 0;           // global: 32-byte sectors touched, per request
  std::uint64_t ideal_sectors = 0;     // global: ceil(distinct bytes / 32), per request
  std::uint64_t dram_bytes = 0;        // global: per-block distinct sectors x 32
  std::uint64_t wavefronts = 0;        // shared
  std::uint64_t ideal_wavefronts = 0;  // shared: ceil(distinct words / 32), per request
  std::uint64_t mma_macs = 0;          // tensor: multiply-adds issued
};

struct LaunchCounters {
  std::string kernel;
  dim3 grid{};
  dim3 block{};
  std::uint64_t blocks_total = 0;
  std::vector<std::uint64_t> blocks_run;  // linear indices
  std::uint64_t barriers = 0;             // __syncthreads generations, summed over blocks
  std::uint64_t load_dram_bytes = 0;      // per-block distinct sectors of all global loads
  std::uint64_t store_dram_bytes = 0;     // ... of all global stores
  std::map<SiteKey, SiteStats> sites;
};

// The counting session: begun and ended by the host, between launches.
struct CounterSession {
  bool active = false;
  std::uint64_t sample_blocks = 0;
  std::vector<LaunchCounters> launches;
};

inline CounterSession& counter_session() {
  static CounterSession session;
  return session;
}

// Linear indices of the blocks a launch of `total` blocks runs.
inline std::vector<std::uint64_t> sampled_blocks(std::uint64_t total, std::uint64_t sample) {
  std::vector<std::uint64_t> run;
  if (sample == 0 || sample >= total) {
    run.resize(total);
    for (std::uint64_t i = 0; i < total; ++i) run[i] = i;
    return run;
  }
  if (sample == 1) return {0};
  for (std::uint64_t i = 0; i < sample; ++i) {
    const std::uint64_t index = (i * (total - 1) + (sample - 1) / 2) / (sample - 1);
    if (run.empty() || run.back() != index) run.push_back(index);
  }
  return run;
}

// Address ranges of the running block's shared memory.
struct SharedRanges {
  std::vector<std::pair<std::uintptr_t, std::size_t>> ranges;

  bool contains(std::uintptr_t address) const {
    for (const auto& [start, bytes] : ranges) {
      if (address >= start && address < start + bytes) return true;
    }
    return false;
  }
};

namespace counters_detail {

struct LaneAccess {
  unsigned lane;
  std::uintptr_t address;
  std::uint32_t bytes;
};

// Total length of the union of the byte ranges of a request.
inline std::uint64_t distinct_bytes(const std::vector<LaneAccess>& request) {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> spans;
  spans.reserve(request.size());
  for (const LaneAccess& a : request) spans.emplace_back(a.address, a.address + a.bytes);
  std::sort(spans.begin(), spans.end());
  std::uint64_t total = 0;
  std::uintptr_t covered = 0;
  for (const auto& [lo, hi] : spans) {
    const std::uintptr_t start = std::max(lo, covered);
    if (hi > start) {
      total += hi - start;
      covered = hi;
    }
  }
  return total;
}

template <class Visit>
void for_each_unit(const LaneAccess& a, std::uintptr_t unit, Visit visit) {
  if (a.bytes == 0) return;
  for (std::uintptr_t u = a.address / unit; u <= (a.address + a.bytes - 1) / unit; ++u) visit(u);
}

inline void count_global(const std::vector<LaneAccess>& request, SiteStats& s,
                         std::unordered_set<std::uintptr_t>& block_sectors,
                         std::unordered_set<std::uintptr_t>& kind_sectors) {
  std::unordered_set<std::uintptr_t> sectors;
  for (const LaneAccess& a : request) {
    for_each_unit(a, kSectorBytes, [&](std::uintptr_t sector) { sectors.insert(sector); });
  }
  s.sectors += sectors.size();
  s.ideal_sectors += (distinct_bytes(request) + kSectorBytes - 1) / kSectorBytes;
  block_sectors.insert(sectors.begin(), sectors.end());
  kind_sectors.insert(sectors.begin(), sectors.end());
}

inline void count_shared(const std::vector<LaneAccess>& request, SiteStats& s) {
  std::uint32_t widest = 0;
  for (const LaneAccess& a : request) widest = std::max(widest, a.bytes);
  const unsigned lanes_per_phase = widest <= 4 ? 32 : widest <= 8 ? 16 : 8;
  std::unordered_set<std::uintptr_t> all_words;
  for (unsigned phase = 0; phase < kCountedWarp / lanes_per_phase; ++phase) {
    std::unordered_set<std::uintptr_t> words;  // distinct words of this phase
    for (const LaneAccess& a : request) {
      if (a.lane / lanes_per_phase != phase) continue;
      for_each_unit(a, kBankBytes, [&](std::uintptr_t word) { words.insert(word); });
    }
    unsigned per_bank[kBanks] = {};
    unsigned worst = 0;
    for (const std::uintptr_t word : words) {
      worst = std::max(worst, ++per_bank[word % kBanks]);
      all_words.insert(word);
    }
    s.wavefronts += worst;
  }
  s.ideal_wavefronts += (all_words.size() + kBanks - 1) / kBanks;
}

}  // namespace counters_detail

// Folds the logs of one finished block (thread id -> its accesses, in
// program order) into `out`.
inline void count_block(const std::vector<AccessLog>& logs, const SharedRanges& shared,
                        std::uint64_t barriers, LaunchCounters& out) {
  using counters_detail::LaneAccess;
  out.barriers += barriers;
  std::map<SiteKey, std::unordered_set<std::uintptr_t>> block_sectors;
  std::unordered_set<std::uintptr_t> load_sectors, store_sectors;
  for (std::size_t warp0 = 0; warp0 < logs.size(); warp0 += kCountedWarp) {
    // requests[site][k] = the lanes' k-th access at that site.
    std::map<SiteKey, std::vector<std::vector<LaneAccess>>> requests;
    for (std::size_t tid = warp0; tid < std::min(logs.size(), warp0 + kCountedWarp); ++tid) {
      std::map<SiteKey, std::size_t> seen;
      for (const AccessRecord& r : logs[tid]) {
        const Space space = r.kind == AccessKind::kMma ? Space::kTensor
                            : shared.contains(r.address) ? Space::kShared
                                                         : Space::kGlobal;
        const SiteKey key{r.file, r.line, r.column, r.kind, space};
        std::vector<std::vector<LaneAccess>>& site = requests[key];
        const std::size_t k = seen[key]++;
        if (site.size() <= k) site.resize(k + 1);
        site[k].push_back(LaneAccess{static_cast<unsigned>(tid - warp0), r.address, r.bytes});
      }
    }
    for (const auto& [key, site_requests] : requests) {
      SiteStats& s = out.sites[key];
      for (const std::vector<LaneAccess>& request : site_requests) {
        ++s.requests;
        s.lane_accesses += request.size();
        for (const LaneAccess& a : request) {
          s.requested_bytes += a.bytes;
          s.max_lane_bytes = std::max<std::uint64_t>(s.max_lane_bytes, a.bytes);
        }
        switch (key.space) {
          case Space::kGlobal:
            counters_detail::count_global(
                request, s, block_sectors[key],
                key.kind == AccessKind::kStore ? store_sectors : load_sectors);
            break;
          case Space::kShared: counters_detail::count_shared(request, s); break;
          case Space::kTensor: s.mma_macs += request.front().bytes; break;
        }
      }
    }
  }
  for (const auto& [key, sectors] : block_sectors) {
    out.sites[key].dram_bytes += sectors.size() * kSectorBytes;
  }
  out.load_dram_bytes += load_sectors.size() * kSectorBytes;
  out.store_dram_bytes += store_sectors.size() * kSectorBytes;
}

// --- JSON -------------------------------------------------------------------

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
      out += buffer;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

inline std::string json_dim(const dim3& d) {
  return "[" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + "]";
}

inline const char* space_name(Space s) {
  switch (s) {
    case Space::kGlobal: return "global";
    case Space::kShared: return "shared";
    case Space::kTensor: return "tensor";
  }
  return "?";
}

inline const char* kind_name(AccessKind k) {
  switch (k) {
    case AccessKind::kLoad: return "load";
    case AccessKind::kStore: return "store";
    case AccessKind::kMma: return "mma";
  }
  return "?";
}

// {"launches": [{kernel, grid, block, blocks_total, blocks_run, sampled_blocks,
//  scale, barriers, load_dram_bytes, store_dram_bytes, sites: [...]}]}; the
// counts are those of the blocks run (multiply by scale to extrapolate).
inline std::string counters_json(const std::vector<LaunchCounters>& launches) {
  std::string out = "{\"launches\":[";
  for (std::size_t i = 0; i < launches.size(); ++i) {
    const LaunchCounters& l = launches[i];
    const double scale = l.blocks_run.empty()
                             ? 0.0
                             : static_cast<double>(l.blocks_total) /
                                   static_cast<double>(l.blocks_run.size());
    char scale_text[32];
    std::snprintf(scale_text, sizeof scale_text, "%.17g", scale);
    out += i == 0 ? "{" : ",{";
    out += "\"kernel\":" + json_string(l.kernel) + ",\"grid\":" + json_dim(l.grid) +
           ",\"block\":" + json_dim(l.block) +
           ",\"blocks_total\":" + std::to_string(l.blocks_total) +
           ",\"blocks_run\":" + std::to_string(l.blocks_run.size()) + ",\"sampled_blocks\":[";
    for (std::size_t b = 0; b < l.blocks_run.size(); ++b) {
      out += (b == 0 ? "" : ",") + std::to_string(l.blocks_run[b]);
    }
    out += "],\"scale\":" + std::string(scale_text) +
           ",\"barriers\":" + std::to_string(l.barriers) +
           ",\"load_dram_bytes\":" + std::to_string(l.load_dram_bytes) +
           ",\"store_dram_bytes\":" + std::to_string(l.store_dram_bytes) + ",\"sites\":[";
    bool first = true;
    for (const auto& [key, s] : l.sites) {
      out += first ? "{" : ",{";
      first = false;
      out += "\"file\":" + json_string(key.file) + ",\"line\":" + std::to_string(key.line) +
             ",\"column\":" + std::to_string(key.column) + ",\"space\":\"" +
             space_name(key.space) + "\",\"op\":\"" + kind_name(key.kind) +
             "\",\"requests\":" + std::to_string(s.requests) +
             ",\"lane_accesses\":" + std::to_string(s.lane_accesses) +
             ",\"requested_bytes\":" + std::to_string(s.requested_bytes) +
             ",\"max_lane_bytes\":" + std::to_string(s.max_lane_bytes) +
             ",\"sectors\":" + std::to_string(s.sectors) +
             ",\"ideal_sectors\":" + std::to_string(s.ideal_sectors) +
             ",\"dram_bytes\":" + std::to_string(s.dram_bytes) +
             ",\"wavefronts\":" + std::to_string(s.wavefronts) +
             ",\"ideal_wavefronts\":" + std::to_string(s.ideal_wavefronts) +
             ",\"mma_macs\":" + std::to_string(s.mma_macs) + "}";
    }
    out += "]}";
  }
  return out + "]}";
}

}  // namespace ak_emu
