// Device-side API of the CUDA emulator: synchronisation, warp intrinsics,
// atomics and math intrinsics, with CUDA's names and signatures.
//
// Call sites are captured with std::source_location default arguments (which
// record the caller's file, line and column) rather than __FILE__/__LINE__
// macros: it works for qualified calls too and tells apart two barriers on
// the same line.
//
// Included by cuda_emu.h after emu_runtime.h; not meant to be used alone.
#pragma once

#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <source_location>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ak_emu {

// --- value <-> 64-bit payload of a warp exchange ---------------------------

// Unsigned integer of the same size as a value type, for std::bit_cast.
template <std::size_t N>
struct UintOfSize;
template <>
struct UintOfSize<1> { using type = std::uint8_t; };
template <>
struct UintOfSize<2> { using type = std::uint16_t; };
template <>
struct UintOfSize<4> { using type = std::uint32_t; };
template <>
struct UintOfSize<8> { using type = std::uint64_t; };

template <class T>
std::uint64_t to_bits(const T& v) {
  static_assert(std::is_trivially_copyable_v<T>,
                "warp intrinsics exchange 1, 2, 4 or 8-byte trivially copyable values");
  return std::bit_cast<typename UintOfSize<sizeof(T)>::type>(v);
}

template <class T>
T from_bits(std::uint64_t bits) {
  return std::bit_cast<T>(static_cast<typename UintOfSize<sizeof(T)>::type>(bits));
}

// __half2 / __nv_bfloat162 are not trivially copyable on the host (user-
// provided copy operations), so they travel as their two halves.
inline std::uint64_t to_bits(const __half2& v) { return to_bits(v.x) | (to_bits(v.y) << 16); }
inline std::uint64_t to_bits(const __nv_bfloat162& v) {
  return to_bits(v.x) | (to_bits(v.y) << 16);
}
template <>
inline __half2 from_bits<__half2>(std::uint64_t bits) {
  return __half2(from_bits<__half>(bits & 0xffffu), from_bits<__half>((bits >> 16) & 0xffffu));
}
template <>
inline __nv_bfloat162 from_bits<__nv_bfloat162>(std::uint64_t bits) {
  return __nv_bfloat162(from_bits<__nv_bfloat16>(bits & 0xffffu),
                        from_bits<__nv_bfloat16>((bits >> 16) & 0xffffu));
}

// --- shuffles ---------------------------------------------------------------

enum class ShflMode : std::uint8_t { kIdx, kUp, kDown, kXor };

// The lane `lane` reads from, following CUDA's rules for sub-warp `width`
// segments; the caller's own lane where CUDA returns the caller's own value.
inline unsigned shfl_source(Block& block, const char* op, ShflMode mode, unsigned lane, int arg,
                            int width, const Site& site) {
  if (width <= 0 || width > static_cast<int>(kWarpSize) || (width & (width - 1)) != 0) {
    block.record_error(std::string(op) + " at " + site.str() + ": width " +
                       std::to_string(width) + " is not a power of two in [1, 32]");
    width = static_cast<int>(kWarpSize);
  }
  const auto w = static_cast<unsigned>(width);
  const unsigned base = lane & ~(w - 1);  // first lane of the caller's segment
  const unsigned pos = lane - base;
  const auto u = static_cast<unsigned>(arg);
  switch (mode) {
    case ShflMode::kIdx: return base + (u & (w - 1));
    case ShflMode::kUp: return u > pos ? lane : lane - u;
    case ShflMode::kDown: return std::uint64_t{pos} + u >= w ? lane : lane + u;
    case ShflMode::kXor: {
      // Earlier segments may be read, later ones give the caller's own value.
      const unsigned src = lane ^ u;
      return src >= base + w ? lane : src;
    }
  }
  return lane;
}

template <class T>
T shfl(const char* op, ShflMode mode, unsigned mask, const T& var, int arg, int width,
       const std::source_location& loc) {
  Block& block = current_block(op);
  const Site site = Site::from(loc);
  const unsigned src = shfl_source(block, op, mode, tl_tid % kWarpSize, arg, width, site);
  return from_bits<T>(block.warp_op(op, mask, to_bits(var), src, WarpReduce::kShuffle, site));
}

inline std::uint64_t warp_collective(const char* op, unsigned mask, std::uint64_t bits,
                                     WarpReduce how, const std::source_location& loc) {
  return current_block(op).warp_op(op, mask, bits, 0, how, Site::from(loc));
}

inline int block_barrier(const char* op, int predicate, BarrierReduce how,
                         const std::source_location& loc) {
  return current_block(op).barrier(op, predicate, how, Site::from(loc));
}

// --- shared memory (used by the AK_SHARED_ARRAY / AK_DYNAMIC_SHARED macros) --

inline void register_static_shared(void* address, std::size_t bytes) {
  current_block("AK_SHARED_ARRAY").register_static_shared(address, bytes);
}

inline unsigned char* dynamic_shared_memory() {
  return current_block("AK_DYNAMIC_SHARED").dynamic_shared();
}

// --- atomics ------------------------------------------------------------------

// Read-modify-write through compare-and-swap, returning the old value like
// every CUDA atomic. Sequentially consistent, i.e. stronger than CUDA's
// relaxed atomics: a missing __threadfence is not detected (documented).
template <class T, class Next>
T atomic_update(T* address, Next next) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load();
  while (!ref.compare_exchange_weak(old, next(old))) {
  }
  return old;
}

// Saturating float -> integer conversion as the GPU does it (NaN -> 0).
template <class I>
I saturate_to(double v) {
  if (std::isnan(v)) return 0;
  if (v <= static_cast<double>(std::numeric_limits<I>::min())) {
    return std::numeric_limits<I>::min();
  }
  if (v >= static_cast<double>(std::numeric_limits<I>::max())) {
    return std::numeric_limits<I>::max();
  }
  return static_cast<I>(v);
}

}  // namespace ak_emu

// ============================================================================
// The CUDA names (global namespace, as in CUDA)
// ============================================================================

// --- block synchronisation ------------------------------------------------------

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ak_emu::block_barrier("__syncthreads", 1, ak_emu::BarrierReduce::kNone, loc);
}
inline int __syncthreads_count(int predicate,
                               std::source_location loc = std::source_location::current()) {
  return ak_emu::block_barrier("__syncthreads_count", predicate, ak_emu::BarrierReduce::kCount,
                               loc);
}
inline int __syncthreads_and(int predicate,
                             std::source_location loc = std::source_location::current()) {
  return ak_emu::block_barrier("__syncthreads_and", predicate, ak_emu::BarrierReduce::kAnd, loc);
}
inline int __syncthreads_or(int predicate,
                            std::source_location loc = std::source_location::current()) {
  return ak_emu::block_barrier("__syncthreads_or", predicate, ak_emu::BarrierReduce::kOr, loc);
}

// Memory fences: blocks run one at a time and barriers already order memory,
// so a fence only has to keep the compiler and CPU from reordering.
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// The polite way to spin-wait. In fiber mode it also lets the other threads
// of the block run; a spin loop without it can only end in the watchdog there.
inline void __nanosleep(unsigned ns) {
  if (ak_emu::tl_block != nullptr && ak_emu::tl_block->uses_fibers()) {
    ak_emu::fiber_yield();
  } else {
    std::this_thread::sleep_for(std::chrono::nanoseconds(ns));
  }
}

// A trapping thread ends the launch with an error (the throw is caught by the
// engine, recorded, and makes AK_LAUNCH throw).
[[noreturn]] inline void __trap() { throw std::runtime_error("__trap() executed"); }

// --- warp intrinsics (full-warp masks only) ----------------------------------------

#define AK_EMU_SHUFFLES_FOR(T)                                                              \
  inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,             \
                       std::source_location loc = std::source_location::current()) {        \
    return ak_emu::shfl<T>("__shfl_sync", ak_emu::ShflMode::kIdx, mask, var, srcLane, width, \
                           loc);                                                            \
  }                                                                                         \
  inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,       \
                          std::source_location loc = std::source_location::current()) {     \
    return ak_emu::shfl<T>("__shfl_up_sync", ak_emu::ShflMode::kUp, mask, var,              \
                           static_cast<int>(delta), width, loc);                            \
  }                                                                                         \
  inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,     \
                            std::source_location loc = std::source_location::current()) {   \
    return ak_emu::shfl<T>("__shfl_down_sync", ak_emu::ShflMode::kDown, mask, var,          \
                           static_cast<int>(delta), width, loc);                            \
  }                                                                                         \
  inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,        \
                           std::source_location loc = std::source_location::current()) {    \
    return ak_emu::shfl<T>("__shfl_xor_sync", ak_emu::ShflMode::kXor, mask, var, laneMask,  \
                           width, loc);                                                     \
  }

// Non-template overloads, as CUDA declares them, so arguments convert the
// same way (e.g. a short is shuffled as an int).
AK_EMU_SHUFFLES_FOR(int)
AK_EMU_SHUFFLES_FOR(unsigned int)
AK_EMU_SHUFFLES_FOR(long)
AK_EMU_SHUFFLES_FOR(unsigned long)
AK_EMU_SHUFFLES_FOR(long long)
AK_EMU_SHUFFLES_FOR(unsigned long long)
AK_EMU_SHUFFLES_FOR(float)
AK_EMU_SHUFFLES_FOR(double)
AK_EMU_SHUFFLES_FOR(__half)
AK_EMU_SHUFFLES_FOR(__half2)
AK_EMU_SHUFFLES_FOR(__nv_bfloat16)
AK_EMU_SHUFFLES_FOR(__nv_bfloat162)
#undef AK_EMU_SHUFFLES_FOR

inline unsigned __ballot_sync(unsigned mask, int predicate,
                              std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(ak_emu::warp_collective(
      "__ballot_sync", mask, predicate != 0 ? 1 : 0, ak_emu::WarpReduce::kBallot, loc));
}
inline int __any_sync(unsigned mask, int predicate,
                      std::source_location loc = std::source_location::current()) {
  return static_cast<int>(ak_emu::warp_collective("__any_sync", mask, predicate != 0 ? 1 : 0,
                                                  ak_emu::WarpReduce::kAny, loc));
}
inline int __all_sync(unsigned mask, int predicate,
                      std::source_location loc = std::source_location::current()) {
  return static_cast<int>(ak_emu::warp_collective("__all_sync", mask, predicate != 0 ? 1 : 0,
                                                  ak_emu::WarpReduce::kAll, loc));
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location loc = std::source_location::current()) {
  ak_emu::warp_collective("__syncwarp", mask, 0, ak_emu::WarpReduce::kNone, loc);
}
// Lanes of the caller's warp that have not returned (no synchronisation).
inline unsigned __activemask() { return ak_emu::current_block("__activemask").active_mask(); }

// sm_80 warp reductions.
#define AK_EMU_WARP_REDUCE(name, T, how)                                                 \
  inline T name(unsigned mask, T value,                                                  \
                std::source_location loc = std::source_location::current()) {           \
    return static_cast<T>(static_cast<std::uint32_t>(ak_emu::warp_collective(            \
        #name, mask, static_cast<std::uint32_t>(value), ak_emu::WarpReduce::how, loc))); \
  }
AK_EMU_WARP_REDUCE(__reduce_add_sync, unsigned, kAdd)
AK_EMU_WARP_REDUCE(__reduce_add_sync, int, kAdd)
AK_EMU_WARP_REDUCE(__reduce_min_sync, unsigned, kMinU)
AK_EMU_WARP_REDUCE(__reduce_min_sync, int, kMinI)
AK_EMU_WARP_REDUCE(__reduce_max_sync, unsigned, kMaxU)
AK_EMU_WARP_REDUCE(__reduce_max_sync, int, kMaxI)
AK_EMU_WARP_REDUCE(__reduce_and_sync, unsigned, kAnd)
AK_EMU_WARP_REDUCE(__reduce_or_sync, unsigned, kOr)
AK_EMU_WARP_REDUCE(__reduce_xor_sync, unsigned, kXor)
#undef AK_EMU_WARP_REDUCE

// --- atomics (CUDA signatures; all return the old value) -----------------------

inline int atomicAdd(int* a, int v) { return std::atomic_ref<int>(*a).fetch_add(v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).fetch_add(v);
}
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_add(v);
}
inline float atomicAdd(float* a, float v) { return std::atomic_ref<float>(*a).fetch_add(v); }
inline double atomicAdd(double* a, double v) { return std::atomic_ref<double>(*a).fetch_add(v); }
inline __half atomicAdd(__half* a, __half v) {
  return ak_emu::atomic_update(a, [v](__half old) { return __hadd(old, v); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  return ak_emu::atomic_update(a, [v](__nv_bfloat16 old) { return __hadd(old, v); });
}

inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v); }
inline unsigned atomicSub(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).fetch_sub(v);
}

inline int atomicExch(int* a, int v) { return std::atomic_ref<int>(*a).exchange(v); }
inline unsigned atomicExch(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).exchange(v);
}
inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).exchange(v);
}
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v); }

#define AK_EMU_ATOMIC_CAS(T)                          \
  inline T atomicCAS(T* a, T compare, T v) {          \
    std::atomic_ref<T>(*a).compare_exchange_strong(compare, v); \
    return compare; /* the old value, success or not */        \
  }
AK_EMU_ATOMIC_CAS(int)
AK_EMU_ATOMIC_CAS(unsigned)
AK_EMU_ATOMIC_CAS(unsigned long long)
AK_EMU_ATOMIC_CAS(unsigned short)
#undef AK_EMU_ATOMIC_CAS

#define AK_EMU_ATOMIC_MINMAX(T)                                                  \
  inline T atomicMax(T* a, T v) {                                                \
    return ak_emu::atomic_update(a, [v](T old) { return old < v ? v : old; });   \
  }                                                                              \
  inline T atomicMin(T* a, T v) {                                                \
    return ak_emu::atomic_update(a, [v](T old) { return v < old ? v : old; });   \
  }
AK_EMU_ATOMIC_MINMAX(int)
AK_EMU_ATOMIC_MINMAX(unsigned)
AK_EMU_ATOMIC_MINMAX(long long)
AK_EMU_ATOMIC_MINMAX(unsigned long long)
#undef AK_EMU_ATOMIC_MINMAX

#define AK_EMU_ATOMIC_BITS(T)                                                               \
  inline T atomicAnd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_and(v); }             \
  inline T atomicOr(T* a, T v) { return std::atomic_ref<T>(*a).fetch_or(v); }               \
  inline T atomicXor(T* a, T v) { return std::atomic_ref<T>(*a).fetch_xor(v); }
AK_EMU_ATOMIC_BITS(int)
AK_EMU_ATOMIC_BITS(unsigned)
AK_EMU_ATOMIC_BITS(unsigned long long)
#undef AK_EMU_ATOMIC_BITS

// CUDA's wrapping counters: ((old >= v) ? 0 : old + 1) and
// ((old == 0 || old > v) ? v : old - 1).
inline unsigned atomicInc(unsigned* a, unsigned v) {
  return ak_emu::atomic_update(a, [v](unsigned old) { return old >= v ? 0u : old + 1u; });
}
inline unsigned atomicDec(unsigned* a, unsigned v) {
  return ak_emu::atomic_update(a,
                               [v](unsigned old) { return old == 0 || old > v ? v : old - 1u; });
}

// --- loads and stores with cache hints: plain accesses here --------------------

template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcg(const T* p) {
  return *p;
}
template <class T>
T __ldca(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}
template <class T>
T __ldlu(const T* p) {
  return *p;
}
template <class T>
T __ldcv(const T* p) {
  return *p;
}
template <class T>
void __stcg(T* p, T v) {
  *p = v;
}
template <class T>
void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
void __stwb(T* p, T v) {
  *p = v;
}
template <class T>
void __stwt(T* p, T v) {
  *p = v;
}

// --- math -------------------------------------------------------------------------
// The fast-math intrinsics compute the exact (libm) result here; on the GPU
// they are approximations, so tests must compare with a tolerance.

inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline void __sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}
inline float __fdividef(float x, float y) { return x / y; }
inline float fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN->0
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }

// Correctly rounded IEEE operations: the host's float arithmetic is IEEE
// round-to-nearest already.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __frsqrt_rn(float x) { return static_cast<float>(1.0 / std::sqrt(double{x})); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// float -> int with an explicit rounding mode; saturating, NaN -> 0.
inline int __float2int_rn(float x) { return ak_emu::saturate_to<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return ak_emu::saturate_to<int>(std::trunc(x)); }
inline int __float2int_rd(float x) { return ak_emu::saturate_to<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return ak_emu::saturate_to<int>(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) {
  return ak_emu::saturate_to<unsigned>(std::nearbyint(x));
}
inline unsigned __float2uint_rz(float x) { return ak_emu::saturate_to<unsigned>(std::trunc(x)); }
inline long long __float2ll_rn(float x) {
  return ak_emu::saturate_to<long long>(std::nearbyint(x));
}
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }

// Reinterpretation.
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }

// Integer intrinsics.
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) {
  return x == 0 ? 0 : std::countr_zero(static_cast<unsigned>(x)) + 1;
}
inline int __ffsll(long long x) {
  return x == 0 ? 0 : std::countr_zero(static_cast<unsigned long long>(x)) + 1;
}
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i, x >>= 1) r = (r << 1) | (x & 1u);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((std::uint64_t{a} * b) >> 32);
}
inline int __mulhi(int a, int b) {
  return static_cast<int>((std::int64_t{a} * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}

// min/max: the overload set of CUDA's crt/math_functions.hpp (mixed signed/
// unsigned pairs go unsigned, float/double pairs go double, floating-point
// versions follow fmin/fmax NaN rules). The host headers declare none of them.
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(static_cast<unsigned>(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, static_cast<unsigned>(b)); }
inline long min(long a, long b) { return a < b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long min(long a, unsigned long b) { return min(static_cast<unsigned long>(a), b); }
inline unsigned long min(unsigned long a, long b) { return min(a, static_cast<unsigned long>(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long min(long long a, unsigned long long b) {
  return min(static_cast<unsigned long long>(a), b);
}
inline unsigned long long min(unsigned long long a, long long b) {
  return min(a, static_cast<unsigned long long>(b));
}
inline float min(float a, float b) { return std::fmin(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double min(float a, double b) { return std::fmin(double{a}, b); }
inline double min(double a, float b) { return std::fmin(a, double{b}); }

inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned max(int a, unsigned b) { return max(static_cast<unsigned>(a), b); }
inline unsigned max(unsigned a, int b) { return max(a, static_cast<unsigned>(b)); }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline unsigned long max(long a, unsigned long b) { return max(static_cast<unsigned long>(a), b); }
inline unsigned long max(unsigned long a, long b) { return max(a, static_cast<unsigned long>(b)); }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline unsigned long long max(long long a, unsigned long long b) {
  return max(static_cast<unsigned long long>(a), b);
}
inline unsigned long long max(unsigned long long a, long long b) {
  return max(a, static_cast<unsigned long long>(b));
}
inline float max(float a, float b) { return std::fmax(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double max(float a, double b) { return std::fmax(double{a}, b); }
inline double max(double a, float b) { return std::fmax(a, double{b}); }

inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long llmin(long long a, long long b) { return a < b ? a : b; }
inline long long llmax(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long ullmin(unsigned long long a, unsigned long long b) {
  return a < b ? a : b;
}
inline unsigned long long ullmax(unsigned long long a, unsigned long long b) {
  return a > b ? a : b;
}

// --- tensor cores: mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.f32 and
// --- mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 ---------------------------

namespace ak_emu {

// The PTX ISA's fragment layouts ("Matrix Fragments for mma.m16n8k16 with
// floating point type", "... for mma.m16n8k8" with .tf32): row and column of
// element i of a lane's A fragment, of its B fragment and of its C/D fragment,
// with groupID = lane >> 2 and threadID_in_group = lane % 4.
// m16n8k16, 16-bit operands: register r holds elements 2r (low 16 bits) and 2r + 1.
struct MmaM16N8K16Layout {
  static constexpr unsigned kK = 16;
  static unsigned a_row(unsigned lane, unsigned i) {
    return (lane >> 2) + ((i < 2 || (i >= 4 && i < 6)) ? 0u : 8u);
  }
  static unsigned a_col(unsigned lane, unsigned i) {
    return (lane % 4) * 2 + (i & 1u) + (i >= 4 ? 8u : 0u);
  }
  static unsigned b_row(unsigned lane, unsigned i) {
    return (lane % 4) * 2 + (i & 1u) + (i >= 2 ? 8u : 0u);
  }
  static unsigned b_col(unsigned lane, unsigned) { return lane >> 2; }
  static unsigned c_row(unsigned lane, unsigned i) { return (lane >> 2) + (i >= 2 ? 8u : 0u); }
  static unsigned c_col(unsigned lane, unsigned i) { return (lane % 4) * 2 + (i & 1u); }
};

// m16n8k8 with TF32 operands: one element per register.
struct MmaM16N8K8Tf32Layout {
  static constexpr unsigned kK = 8;
  static unsigned a_row(unsigned lane, unsigned i) { return (lane >> 2) + (i % 2 ? 8u : 0u); }
  static unsigned a_col(unsigned lane, unsigned i) { return (lane % 4) + (i >= 2 ? 4u : 0u); }
  static unsigned b_row(unsigned lane, unsigned i) { return (lane % 4) + (i >= 1 ? 4u : 0u); }
  static unsigned b_col(unsigned lane, unsigned) { return lane >> 2; }
  static unsigned c_row(unsigned lane, unsigned i) { return (lane >> 2) + (i >= 2 ? 8u : 0u); }
  static unsigned c_col(unsigned lane, unsigned i) { return (lane % 4) * 2 + (i & 1u); }
};

// Element `part` of a fragment register holding 16-bit operands.
template <class T>
float mma_element(std::uint32_t reg, unsigned part) {
  const auto bits = static_cast<std::uint16_t>(part == 0 ? reg & 0xffffu : reg >> 16);
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(std::bit_cast<__half>(bits));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "mma operands are __half or __nv_bfloat16");
    return __bfloat162float(std::bit_cast<__nv_bfloat16>(bits));
  }
}

// What a TF32 tensor core reads of a register: its top 19 bits (sign, exponent,
// 10 mantissa bits); the rest is ignored, not rounded.
inline float tf32_element(std::uint32_t reg, unsigned) {
  return std::bit_cast<float>(reg & 0xffffe000u);
}

// The lanes' fragment registers, exchanged between the two warp rendezvous of
// one emulated mma. Blocks and launches run one at a time, so one buffer per
// warp slot of a block suffices.
struct MmaFragments {
  std::uint32_t a[4];
  std::uint32_t b[2];
};
inline MmaFragments mma_exchange[1024 / kWarpSize][kWarpSize];

// acc += A * B for the calling warp: every lane publishes its A and B
// registers to the warp; after a warp rendezvous each lane places all lanes'
// elements by `Layout` and computes its own four D elements (products in fp32,
// summed in k order); a second rendezvous keeps the registers until every lane
// has read them. A kernel whose fragments do not follow the layout therefore
// gets wrong results here, as on the GPU.
// (Two rendezvous instead of one shuffle per register and lane: with OS
// threads each rendezvous costs about 10 us, and 96 of them per mma made
// a 9x11-pixel fp16 convolution take 48 s.)
template <class Layout, class Element>
void warp_mma(float (&acc)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2],
              Element element, std::source_location loc) {
  constexpr unsigned kK = Layout::kK;
  constexpr unsigned kAElements = 16 * kK / kWarpSize;  // per lane, in 4 registers
  constexpr unsigned kBElements = 8 * kK / kWarpSize;   // per lane, in 2 registers
  constexpr unsigned kPerRegister = kAElements / 4;
  const unsigned lane = tl_tid % kWarpSize;
  MmaFragments (&warp)[kWarpSize] = mma_exchange[tl_tid / kWarpSize];
  warp[lane] = {{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  __syncwarp(0xffffffffu, loc);
  float a_full[16][kK];
  float b_full[kK][8];
  for (unsigned src = 0; src < kWarpSize; ++src) {
    for (unsigned i = 0; i < kAElements; ++i) {
      a_full[Layout::a_row(src, i)][Layout::a_col(src, i)] =
          element(warp[src].a[i / kPerRegister], i % kPerRegister);
    }
    for (unsigned i = 0; i < kBElements; ++i) {
      b_full[Layout::b_row(src, i)][Layout::b_col(src, i)] =
          element(warp[src].b[i / kPerRegister], i % kPerRegister);
    }
  }
  __syncwarp(0xffffffffu, loc);
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = Layout::c_row(lane, i);
    const unsigned col = Layout::c_col(lane, i);
    float sum = 0.0f;
    for (unsigned k = 0; k < kK; ++k) sum = std::fma(a_full[row][k], b_full[k][col], sum);
    acc[i] += sum;
  }
}

}  // namespace ak_emu

// The emulator's definitions of the kernels' tensor-core steps (csrc/kernels/mma.cuh).
template <class T>
inline void ak_mma_m16n8k16(float (&acc)[4], const std::uint32_t (&a)[4],
                            const std::uint32_t (&b)[2],
                            std::source_location loc = std::source_location::current()) {
  ak_emu::record_access(nullptr, 16 * 8 * 16, ak_emu::AccessKind::kMma, loc);  // multiply-adds
  ak_emu::warp_mma<ak_emu::MmaM16N8K16Layout>(acc, a, b, &ak_emu::mma_element<T>, loc);
}

inline void ak_mma_m16n8k8_tf32(float (&acc)[4], const std::uint32_t (&a)[4],
                                const std::uint32_t (&b)[2],
                                std::source_location loc = std::source_location::current()) {
  ak_emu::record_access(nullptr, 16 * 8 * 8, ak_emu::AccessKind::kMma, loc);  // multiply-adds
  ak_emu::warp_mma<ak_emu::MmaM16N8K8Tf32Layout>(acc, a, b, &ak_emu::tf32_element, loc);
}

// --- cp.async and ldmatrix (wrappers of csrc/kernels/cuda_compat.h / mma.cuh) ----

namespace ak_emu {

inline std::string hex_address(const void* p) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%p", p);
  return buffer;
}

// cp.async.{ca,cg}.shared.global [dst], [src], bytes, src_bytes: the first
// src_bytes bytes from global memory, the rest zero. The bytes are read now and
// written to dst by the wait that completes the copy's group; until then dst
// holds the poison (0xff bytes, NaN for every float type), so a read before the
// wait shows NaN. Nothing here orders threads for ThreadSanitizer: another
// thread's read is ordered after the copy only by a barrier after the wait.
inline void cp_async(void* dst, const void* src, unsigned bytes, int src_bytes,
                     const std::source_location& loc) {
  Block& block = current_block("cp.async");
  const auto where = [&] { return " at " + Site::from(loc).str(); };
  if (src_bytes < 0 || static_cast<unsigned>(src_bytes) > bytes) {
    throw std::runtime_error("cp.async of " + std::to_string(bytes) + " bytes with src-size " +
                             std::to_string(src_bytes) + " (must be 0.." + std::to_string(bytes) +
                             ")" + where());
  }
  if (reinterpret_cast<std::uintptr_t>(dst) % bytes != 0 ||
      reinterpret_cast<std::uintptr_t>(src) % bytes != 0) {
    throw std::runtime_error("misaligned cp.async of " + std::to_string(bytes) + " bytes: dst " +
                             hex_address(dst) + ", src " + hex_address(src) + where());
  }
  if (!block.is_shared(dst, bytes)) {
    throw std::runtime_error("cp.async destination " + hex_address(dst) +
                             " is not in the block's shared memory" + where());
  }
  record_access(src, static_cast<std::size_t>(src_bytes), AccessKind::kLoad, loc);
  record_access(dst, bytes, AccessKind::kStore, loc);
  AsyncCopy copy{static_cast<unsigned char*>(dst), {}, bytes, AsyncCopyQueue::kUncommitted};
  std::memcpy(copy.data, src, static_cast<std::size_t>(src_bytes));
  std::memset(dst, 0xff, bytes);
  async_copy_queues[tl_tid].pending.push_back(copy);
}

inline void cp_async_commit() {
  current_block("cp.async.commit_group");
  AsyncCopyQueue& queue = async_copy_queues[tl_tid];
  for (AsyncCopy& c : queue.pending) {
    if (c.group == AsyncCopyQueue::kUncommitted) c.group = queue.committed;
  }
  ++queue.committed;
}

// Completes the copies of every committed group but the newest `newest_kept`
// (cp.async.wait_group N), or every copy, committed or not (cp.async.wait_all).
inline void cp_async_wait(std::uint64_t newest_kept, bool all) {
  current_block("cp.async.wait_group");
  AsyncCopyQueue& queue = async_copy_queues[tl_tid];
  const std::uint64_t done_below =
      queue.committed > newest_kept ? queue.committed - newest_kept : 0;
  std::vector<AsyncCopy> kept;
  for (const AsyncCopy& c : queue.pending) {
    if (all || (c.group != AsyncCopyQueue::kUncommitted && c.group < done_below)) {
      std::memcpy(c.dst, c.data, c.bytes);
    } else {
      kept.push_back(c);
    }
  }
  queue.pending.swap(kept);
}

// ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16: lanes 8i..8i+7 give the
// 16-byte rows of matrix i; lane l = 4g + t receives in r[i] matrix i's
// elements (g, 2t) and (g, 2t + 1), the lower-indexed in the low half (PTX ISA,
// "Warp-level matrix load instruction: ldmatrix"); with .trans, (2t, g) and
// (2t + 1, g). The rows are exchanged between two warp rendezvous as in
// warp_mma; each giving lane's row is one 16-byte shared load for the counters
// (8 lanes per phase: one wavefront per conflict-free matrix).
struct LdmatrixRow {
  const unsigned char* row;
  bool bad;
};
inline LdmatrixRow ldmatrix_exchange[1024 / kWarpSize][kWarpSize];

template <unsigned kMatrices, bool kTrans>
void warp_ldmatrix(std::uint32_t (&r)[kMatrices], const void* row,
                   const std::source_location& loc) {
  static_assert(kMatrices == 1 || kMatrices == 2 || kMatrices == 4, "ldmatrix .x1, .x2 or .x4");
  Block& block = current_block("ldmatrix");
  const unsigned lane = tl_tid % kWarpSize;
  LdmatrixRow (&warp)[kWarpSize] = ldmatrix_exchange[tl_tid / kWarpSize];
  const bool gives_row = lane < 8 * kMatrices;
  const bool bad = gives_row && (reinterpret_cast<std::uintptr_t>(row) % 16 != 0 ||
                                 !block.is_shared(row, 16));
  if (gives_row && !bad) record_access(row, 16, AccessKind::kLoad, loc);
  warp[lane] = {static_cast<const unsigned char*>(row), bad};
  __syncwarp(0xffffffffu, loc);
  for (unsigned src = 0; src < 8 * kMatrices; ++src) {
    if (warp[src].bad) {
      const std::string address = hex_address(warp[src].row);
      __syncwarp(0xffffffffu, loc);  // every lane has read the rows before any returns
      throw std::runtime_error("ldmatrix row of lane " + std::to_string(src) + " at " + address +
                               " is not a 16-byte aligned shared address, at " +
                               Site::from(loc).str());
    }
  }
  const unsigned g = lane / 4;
  const unsigned t = lane % 4;
  for (unsigned i = 0; i < kMatrices; ++i) {
    std::uint16_t lo, hi;
    if constexpr (kTrans) {
      std::memcpy(&lo, warp[8 * i + 2 * t].row + 2 * g, 2);
      std::memcpy(&hi, warp[8 * i + 2 * t + 1].row + 2 * g, 2);
    } else {
      std::memcpy(&lo, warp[8 * i + g].row + 4 * t, 2);
      std::memcpy(&hi, warp[8 * i + g].row + 4 * t + 2, 2);
    }
    r[i] = static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
  }
  __syncwarp(0xffffffffu, loc);
}

}  // namespace ak_emu

template <int kBytes>
inline void ak_cp_async(void* smem_dst, const void* global_src, int src_bytes,
                        std::source_location loc = std::source_location::current()) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  ak_emu::cp_async(smem_dst, global_src, kBytes, src_bytes, loc);
}
inline void ak_cp_async_commit() { ak_emu::cp_async_commit(); }
template <int kNewestKept>
inline void ak_cp_async_wait() {
  static_assert(kNewestKept >= 0, "cp.async.wait_group N needs N >= 0");
  ak_emu::cp_async_wait(kNewestKept, false);
}
inline void ak_cp_async_wait_all() { ak_emu::cp_async_wait(0, true); }

template <int kMatrices, bool kTrans = false>
inline void ak_ldmatrix(std::uint32_t (&r)[kMatrices], const void* smem_row,
                        std::source_location loc = std::source_location::current()) {
  ak_emu::warp_ldmatrix<kMatrices, kTrans>(r, smem_row, loc);
}
