// Self-test driver of the CUDA emulator (built and run by tests/test_cuda_emu.py).
//
//   selftest <command>
//
// Correct kernels (exit 0 when the results match a host reference, 1 if not):
//   matmul reduce convert warp warp-partial atomics early-exit barrier-predicates mma
//   mma-tf32 tf32-round cp-async ldmatrix
// Efficiency counters (selftest/counters.cuh):
//   counters         runs each counter kernel between counters_begin/end and
//                    prints {"case": <counters JSON>, ...} on one line
// Broken kernels (the interesting outcome is how the run fails):
//   race             matmul without its load barrier   -> ThreadSanitizer report
//   mma-wrong-layout tensor-core step, A fragment misplaced -> FAIL (exit 1)
//   mma-tf32-wrong-layout the same for the TF32 step        -> FAIL (exit 1)
//   cp-async-read-before-wait reads a copy's destination before its wait -> FAIL, NaN
//   cp-async-unwaited / -misaligned / -bad-size               -> launch throws (exit 3)
//   cp-async-race    reads another thread's copy without a barrier -> ThreadSanitizer report
//   ldmatrix-wrong-rows lanes give the wrong A rows          -> FAIL (exit 1)
//   ldmatrix-misaligned row not 16-byte aligned              -> launch throws (exit 3)
//   overflow         reads one element past a buffer    -> AddressSanitizer report
//   misaligned       misaligned float4 load             -> UBSan report
//   divergent        __syncthreads at two call sites    -> launch throws (exit 3)
//   unwritten-shared reads never-written shared memory  -> prints the NaN counts
//   hang             threads spin while one waits       -> watchdog aborts
//   deadlock         __syncwarp vs __syncthreads        -> watchdog / fiber scheduler abort
//   bad-launch       1056 threads per block             -> launch throws (exit 3)
//   partial-mask     half-warp shuffle mask             -> launch throws (exit 3)
//   inactive-lane    shuffle from a lane that does not exist -> launch throws (exit 3)
// A launch that throws is reported on stderr with exit status 3.
// AK_EMU_MODE=fibers runs the same commands in fiber mode.
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "async_copy.cuh"
#include "broken.cuh"
#include "counters.cuh"
#include "kernels.cuh"

namespace {

constexpr int kPass = 0;
constexpr int kFail = 1;
constexpr int kUsage = 2;
constexpr int kLaunchError = 3;

int report(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  return ok ? kPass : kFail;
}

// Small integers keep every float sum exact, so results compare exactly.
std::vector<float> small_ints(std::size_t n, int seed) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>((i * 7 + seed * 3) % 9) - 4.0f;
  return v;
}

std::vector<float> host_matmul(const std::vector<float>& a, const std::vector<float>& b, int m,
                               int n, int k) {
  std::vector<float> c(static_cast<std::size_t>(m) * n, 0.0f);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int p = 0; p < k; ++p) acc += a[i * k + p] * b[p * n + j];
      c[i * n + j] = acc;
    }
  }
  return c;
}

// Shapes that are not multiples of the tile, so the bounds checks matter.
constexpr int kM = 37;
constexpr int kN = 29;
constexpr int kK = 45;

template <bool kBroken>
int run_matmul() {
  const auto a = small_ints(kM * kK, 1);
  const auto b = small_ints(kK * kN, 2);
  std::vector<float> c(kM * kN, -1.0f);
  selftest::matmul<kBroken>(a.data(), b.data(), c.data(), kM, kN, kK, nullptr);
  const auto ref = host_matmul(a, b, kM, kN, kK);
  int mismatches = 0;
  for (std::size_t i = 0; i < c.size(); ++i) mismatches += c[i] != ref[i] ? 1 : 0;
  return report(mismatches == 0, "matmul " + std::to_string(kM) + "x" + std::to_string(kK) +
                                     " * " + std::to_string(kK) + "x" + std::to_string(kN) +
                                     ": " + std::to_string(mismatches) + " mismatches");
}

int run_reduce() {
  constexpr int kN = 1000, kBlocks = 3, kThreads = 128;
  const auto x = small_ints(kN, 3);
  std::vector<float> block_sums(kBlocks, 0.0f);
  float total = 0.0f;
  unsigned long long count = 0;
  selftest::sum(x.data(), kN, block_sums.data(), &total, &count, kBlocks, kThreads, nullptr);
  // Host model of the same grid-stride partition.
  bool ok = count == kN;
  float ref_total = 0.0f;
  for (int blk = 0; blk < kBlocks; ++blk) {
    float s = 0.0f;
    for (int i = 0; i < kN; ++i) s += (i % (kBlocks * kThreads)) / kThreads == blk ? x[i] : 0.0f;
    ok = ok && block_sums[blk] == s;
    ref_total += s;
  }
  ok = ok && total == ref_total;
  return report(ok, "reduce: total " + std::to_string(total) + " (expected " +
                        std::to_string(ref_total) + "), count " + std::to_string(count));
}

int run_convert() {
  // 1/3 and friends need rounding; the expected values are the exact nearest
  // half / bfloat16 numbers, written out rather than computed by the same
  // conversion routines.
  const std::vector<float> in = {1.0f / 3.0f, -2.5f, 65504.0f, 1e-8f, 3.14159265f};
  const std::vector<double> half_ref = {0.333251953125, -2.5, 65504.0, 0.0, 3.140625};
  const std::vector<double> bf16_ref = {0.333984375, -2.5, 65536.0, 1.0011717677116394e-08,
                                        3.140625};
  const int n = static_cast<int>(in.size());
  std::vector<__half> h(n);
  std::vector<__nv_bfloat16> b(n);
  std::vector<float> out_h(n), out_b(n);
  AK_LAUNCH(selftest::to_half_bf16, 1, 32, 0, nullptr)(in.data(), h.data(), b.data(), n);
  AK_LAUNCH(selftest::from_half_bf16, 1, 32, 0, nullptr)(h.data(), b.data(), out_h.data(),
                                                           out_b.data(), n);
  bool ok = true;
  for (int i = 0; i < n; ++i) {
    const bool good = out_h[i] == static_cast<float>(2 * half_ref[i]) &&
                      out_b[i] == static_cast<float>(2 * bf16_ref[i]);
    if (!good) {
      std::printf("  [%d] in %.9g: half*2 %.9g (want %.9g), bf16*2 %.9g (want %.9g)\n", i, in[i],
                  out_h[i], 2 * half_ref[i], out_b[i], 2 * bf16_ref[i]);
    }
    ok = ok && good;
  }
  return report(ok, "convert: float -> half/bfloat16 -> float for " + std::to_string(n) +
                        " values");
}

// Host model of warp_ops, field by field (see kernels.cuh).
std::vector<double> expected_warp_ops(int threads) {
  std::vector<double> e(static_cast<std::size_t>(threads) * selftest::kWarpFields);
  for (int tid = 0; tid < threads; ++tid) {
    const int lane = tid % 32;
    const int warp0 = tid - lane;
    double* o = e.data() + static_cast<std::size_t>(tid) * selftest::kWarpFields;
    auto within = [&](int w) { return lane & ~(w - 1); };  // segment start
    o[0] = (warp0 + 3) * 10;
    o[1] = warp0 + within(8) + 5;
    o[2] = lane >= 1 ? tid - 1 : tid;
    o[3] = lane - within(8) >= 2 ? tid - 2 : tid;
    o[4] = lane - within(16) + 2 < 16 ? tid + 2 : tid;
    o[5] = warp0 + (lane ^ 5);
    o[6] = (lane ^ 12) < within(8) + 8 ? warp0 + (lane ^ 12) : tid;
    o[7] = 0x49249249u;  // lanes 0, 3, ..., 30
    o[8] = 1;
    o[9] = 0;
    o[10] = (warp0 + 31) * 0.5;
    o[11] = lane < 31 ? static_cast<double>(static_cast<long long>(tid + 1) << 40)
                      : static_cast<double>(static_cast<long long>(tid) << 40);
    o[12] = (warp0 + (lane ^ 1)) + 0.5;
    o[13] = warp0;
    o[14] = 496;  // 0 + 1 + ... + 31
    o[15] = 0xffffffffu;
    o[16] = lane >= 4 ? (tid - 4) * 3.0 : tid * 3.0;
    o[17] = (warp0 + (lane ^ 1)) * 0.25;
  }
  return e;
}

int run_warp() {
  constexpr int kThreads = 64;
  std::vector<double> out(kThreads * selftest::kWarpFields, -1.0);
  AK_LAUNCH(selftest::warp_ops, 1, kThreads, 0, nullptr)(out.data());
  const auto ref = expected_warp_ops(kThreads);
  int mismatches = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] != ref[i]) {
      if (++mismatches <= 10) {
        std::printf("  thread %zu field %zu: got %.17g, want %.17g\n", i / selftest::kWarpFields,
                    i % selftest::kWarpFields, out[i], ref[i]);
      }
    }
  }
  return report(mismatches == 0,
                "warp intrinsics: " + std::to_string(mismatches) + " mismatching fields");
}

int run_warp_partial() {
  constexpr int kThreads = 48;
  std::vector<unsigned> out(kThreads * selftest::kPartialFields, 7u);
  AK_LAUNCH(selftest::warp_partial, 1, kThreads, 0, nullptr)(out.data());
  bool ok = true;
  for (unsigned tid = 0; tid < kThreads; ++tid) {
    const unsigned* o = out.data() + tid * selftest::kPartialFields;
    const bool full = tid < 32;
    ok = ok && o[0] == (tid ^ 1u) && o[1] == (full ? 0xffffffffu : 0xffffu) &&
         o[2] == (full ? 0xffffffffu : 0xffffu) && o[3] == (full ? 496u : 120u);
  }
  return report(ok, "warp intrinsics in a partial warp (48-thread block)");
}

int run_atomics() {
  constexpr int kBlocks = 2, kThreads = 128, kTotal = kBlocks * kThreads;
  selftest::AtomicResults r{};
  r.imax = -1000;
  r.imin = 1000;
  r.umax = 0;
  r.llmin = 0;
  r.cas_target = -1;
  r.hsum = __float2half(0.0f);
  r.exch = -1;
  AK_LAUNCH(selftest::atomics, kBlocks, kThreads, 0, nullptr)(&r);
  int imax = -1000, imin = 1000;
  for (int t = 0; t < kTotal; ++t) {
    imax = std::max(imax, (t * 37) % 101 - 50);
    imin = std::min(imin, (t * 37) % 101 - 50);
  }
  const bool ok = r.imax == imax && r.imin == imin && r.umax == (kTotal - 1) * 3u &&
                  r.llmin == -static_cast<long long>(kTotal - 1) * 1000000000LL &&
                  r.ullsum == static_cast<unsigned long long>(kTotal) * (kTotal - 1) / 2 &&
                  r.cas_winners == 1 && r.cas_target >= 0 && r.cas_target < kTotal &&
                  r.inc_counter == kTotal % 10 && r.fsum == static_cast<float>(kTotal) &&
                  r.dsum == kTotal * 0.5 && __half2float(r.hsum) == static_cast<float>(kTotal) &&
                  r.exch >= 0 && r.exch < kTotal && r.bits_or == 0xffffffffu;
  return report(ok, "atomics: max " + std::to_string(r.imax) + " min " + std::to_string(r.imin) +
                        " ullsum " + std::to_string(r.ullsum) + " inc " +
                        std::to_string(r.inc_counter) + " fsum " + std::to_string(r.fsum) +
                        " hsum " + std::to_string(__half2float(r.hsum)) + " cas winners " +
                        std::to_string(r.cas_winners));
}

int run_early_exit() {
  constexpr int kThreads = 64, kActive = 40;
  std::vector<int> in(kThreads), out(kThreads, -1);
  for (int i = 0; i < kThreads; ++i) in[i] = i * i;
  AK_LAUNCH(selftest::early_exit_reverse, 1, kThreads, 0, nullptr)(in.data(), out.data(), kActive);
  bool ok = true;
  for (int i = 0; i < kThreads; ++i) ok = ok && out[i] == (i < kActive ? 2 * in[kActive - 1 - i] : -1);
  return report(ok, "early exit: 24 of 64 threads return before two barriers");
}

int run_barrier_predicates() {
  constexpr int kThreads = 96;
  std::vector<int> out(kThreads * 3, -1);
  AK_LAUNCH(selftest::barrier_predicates, 1, kThreads, 0, nullptr)(out.data());
  bool ok = true;
  for (int t = 0; t < kThreads; ++t) ok = ok && out[t * 3] == 32 && out[t * 3 + 1] == 1 && out[t * 3 + 2] == 1;
  return report(ok, "__syncthreads_count/and/or");
}

// --- cp.async and ldmatrix (selftest/async_copy.cuh) --------------------------

// copy_groups: the host model of what each thread writes (see the kernel's comment).
template <bool kReadBeforeWait>
int run_cp_async() {
  namespace ac = selftest::async_copy;
  constexpr int kThreads = ac::kThreads;
  std::vector<float4> storage(192);  // float4: 16-byte aligned, 768 floats
  float* in = &storage[0].x;
  for (int i = 0; i < 768; ++i) in[i] = static_cast<float>((i * 7) % 23) - 11.0f;
  std::vector<float> out(7 * kThreads, -100.0f);
  auto kernel = &ac::copy_groups<kReadBeforeWait>;
  AK_LAUNCH(kernel, 1, kThreads, 0, nullptr)(in, out.data());
  int mismatches = 0, nans = 0;
  for (int t = 0; t < kThreads; ++t) {
    const int n = t ^ 1;
    const float want[7] = {in[4 * n], in[4 * n + 1], n % 5 == 0 ? 0.0f : in[4 * n + 2],
                           n % 5 == 0 ? 0.0f : in[4 * n + 3], in[256 + 2 * n] + in[257 + 2 * n],
                           in[384 + n], in[448 + 4 * n]};
    for (int i = 0; i < 7; ++i) {
      nans += std::isnan(out[7 * t + i]) ? 1 : 0;
      mismatches += out[7 * t + i] != want[i] ? 1 : 0;
    }
  }
  return report(mismatches == 0, "cp.async 16/8/4 bytes, zero-fill, two groups: " +
                                     std::to_string(mismatches) + " mismatches, " +
                                     std::to_string(nans) + " NaN");
}

int run_cp_async_broken(const std::string& which) {
  namespace ac = selftest::async_copy;
  std::vector<float4> storage(64);
  const float* in = &storage[0].x;
  std::vector<float> out(ac::kThreads, 0.0f);
  if (which == "unwaited") {
    AK_LAUNCH(ac::unwaited, 1, 32, 0, nullptr)(in);
  } else if (which == "misaligned") {
    AK_LAUNCH(ac::misaligned, 1, 32, 0, nullptr)(in);
  } else if (which == "bad-size") {
    AK_LAUNCH(ac::bad_size, 1, 32, 0, nullptr)(in);
  } else {
    AK_LAUNCH(ac::race, 1, ac::kThreads, 0, nullptr)(in, out.data());
    return report(true, "cp-async-race: kernel completed");
  }
  return report(false, "cp-async-" + which + ": the launch did not fail");
}

template <typename T, bool kWrongRows>
int ldmatrix_mismatches() {
  const auto a32 = small_ints(256, 6);
  const auto b32 = small_ints(256, 7);
  std::vector<T> a(256), b(256), b_t(256);
  for (int i = 0; i < 256; ++i) {
    a[i] = alexnet_kernels::kernels::from_acc<T>(a32[i]);
    b[i] = alexnet_kernels::kernels::from_acc<T>(b32[i]);
    b_t[(i % 16) * 16 + i / 16] = b[i];  // b_t[n][k] = b[k][n]
  }
  std::vector<float> d(512, -1.0f);
  auto kernel = &selftest::async_copy::ldmatrix_mma<T, kWrongRows>;
  AK_LAUNCH(kernel, 1, 32, 0, nullptr)(a.data(), b.data(), b_t.data(), d.data());
  const auto ref = host_matmul(a32, b32, 16, 16, 16);
  int mismatches = 0;
  for (int i = 0; i < 512; ++i) mismatches += d[i] != ref[i % 256] ? 1 : 0;
  return mismatches;
}

template <bool kWrongRows>
int run_ldmatrix() {
  const int half = ldmatrix_mismatches<__half, kWrongRows>();
  const int bf16 = ldmatrix_mismatches<__nv_bfloat16, kWrongRows>();
  return report(half == 0 && bf16 == 0, "ldmatrix x1/x2/x4/x4.trans -> mma 16x16 * 16x16: " +
                                            std::to_string(half) + " (fp16), " +
                                            std::to_string(bf16) + " (bf16) mismatches");
}

int run_ldmatrix_misaligned() {
  std::vector<float> out(32, 0.0f);
  AK_LAUNCH(selftest::async_copy::ldmatrix_misaligned, 1, 32, 0, nullptr)(out.data());
  return report(false, "ldmatrix-misaligned: the launch did not fail");
}

// --- broken kernels ---------------------------------------------------------

int run_overflow() {
  constexpr int kN = 100;
  std::vector<float> in(kN, 1.0f), out(kN, 0.0f);
  AK_LAUNCH(broken::shift_left, 2, 64, 0, nullptr)(in.data(), out.data(), kN);
  return report(true, "overflow: kernel completed (no sanitizer caught the read past the end)");
}

int run_misaligned() {
  constexpr int kN4 = 8;
  std::vector<float4> storage(kN4 + 1);  // float4 storage: 16-byte aligned
  std::vector<float4> out(kN4);
  const float* in = &storage[0].x;
  AK_LAUNCH(broken::load_float4, 1, 32, 0, nullptr)(in, out.data(), 1, kN4);
  return report(true, "misaligned: kernel completed (no sanitizer caught the misaligned load)");
}

int run_divergent() {
  std::vector<int> out(64, 0);
  AK_LAUNCH(broken::divergent_barrier, 1, 64, 0, nullptr)(out.data());
  return report(false, "divergent: the launch did not report the divergent barrier");
}

int run_unwritten_shared() {
  constexpr int kBlocks = 2, kThreads = 32;
  std::vector<float> out(kBlocks * kThreads * 2, 0.0f);
  AK_LAUNCH(broken::read_unwritten_shared, kBlocks, kThreads, kThreads * sizeof(float),
            nullptr)(out.data());
  for (int blk = 0; blk < kBlocks; ++blk) {
    int nan_static = 0, nan_dynamic = 0;
    for (int t = 0; t < kThreads; ++t) {
      nan_static += std::isnan(out[(blk * kThreads + t) * 2]) ? 1 : 0;
      nan_dynamic += std::isnan(out[(blk * kThreads + t) * 2 + 1]) ? 1 : 0;
    }
    std::printf("block %d: static NaN %d/%d, dynamic NaN %d/%d\n", blk, nan_static, kThreads,
                nan_dynamic, kThreads);
  }
  return kPass;
}

int run_hang() {
  int flag = 0;
  AK_LAUNCH(broken::spin_deadlock, 1, 32, 0, nullptr)(&flag);
  return report(false, "hang: the deadlocked launch returned");
}

int run_deadlock() {
  std::vector<int> out(32);
  AK_LAUNCH(broken::warp_barrier_deadlock, 1, 32, 0, nullptr)(out.data());
  return report(false, "deadlock: the deadlocked launch returned");
}

int run_bad_launch() {
  std::vector<int> out(1);
  const dim3 block(32, 33);
  AK_LAUNCH(broken::noop, 1, block, 0, nullptr)(out.data());
  return report(false, "bad-launch: a 1056-thread block was accepted");
}

int run_partial_mask() {
  std::vector<int> out(32);
  AK_LAUNCH(broken::partial_mask_shuffle, 1, 32, 0, nullptr)(out.data());
  return report(false, "partial-mask: the half-warp mask was accepted");
}

int run_inactive_lane() {
  std::vector<int> out(48);
  AK_LAUNCH(broken::inactive_lane_shuffle, 1, 48, 0, nullptr)(out.data());
  return report(false, "inactive-lane: the read of a missing lane was accepted");
}

// D = A * B + C for fp16 and bf16 through the emulated mma.m16n8k16: small
// integers keep every product and sum exact, so results compare exactly.
template <typename T, bool kWrongLayout>
int mma_mismatches() {
  const auto a32 = small_ints(16 * 16, 3);
  const auto b32 = small_ints(16 * 8, 4);
  const auto c = small_ints(16 * 8, 5);
  std::vector<T> a(a32.size());
  std::vector<T> b_t(b32.size());
  for (std::size_t i = 0; i < a32.size(); ++i) a[i] = alexnet_kernels::kernels::from_acc<T>(a32[i]);
  for (int k = 0; k < 16; ++k) {
    for (int n = 0; n < 8; ++n) b_t[n * 16 + k] = alexnet_kernels::kernels::from_acc<T>(b32[k * 8 + n]);
  }
  std::vector<float> d(16 * 8, -1.0f);
  auto kernel = &selftest::mma_m16n8k16_tile<T, kWrongLayout>;
  AK_LAUNCH(kernel, 1, 32, 0, nullptr)(a.data(), b_t.data(), c.data(), d.data());
  auto ref = host_matmul(a32, b32, 16, 8, 16);
  int mismatches = 0;
  for (std::size_t i = 0; i < d.size(); ++i) mismatches += d[i] != ref[i] + c[i] ? 1 : 0;
  return mismatches;
}

template <bool kWrongLayout>
int run_mma() {
  const int half = mma_mismatches<__half, kWrongLayout>();
  const int bf16 = mma_mismatches<__nv_bfloat16, kWrongLayout>();
  return report(half == 0 && bf16 == 0, "mma m16n8k16 16x16 * 16x8: " + std::to_string(half) +
                                            " (fp16), " + std::to_string(bf16) +
                                            " (bf16) mismatches");
}

// The same through the emulated mma.m16n8k8 with TF32 operands (small
// integers are exact in TF32).
template <bool kWrongLayout>
int tf32_mma_mismatches() {
  const auto a = small_ints(16 * 8, 6);
  const auto b = small_ints(8 * 8, 7);
  const auto c = small_ints(16 * 8, 8);
  std::vector<float> b_t(b.size());
  for (int k = 0; k < 8; ++k) {
    for (int n = 0; n < 8; ++n) b_t[n * 8 + k] = b[k * 8 + n];
  }
  std::vector<float> d(16 * 8, -1.0f);
  auto kernel = &selftest::mma_m16n8k8_tf32_tile<kWrongLayout>;
  AK_LAUNCH(kernel, 1, 32, 0, nullptr)(a.data(), b_t.data(), c.data(), d.data());
  auto ref = host_matmul(a, b, 16, 8, 8);
  int mismatches = 0;
  for (std::size_t i = 0; i < d.size(); ++i) mismatches += d[i] != ref[i] + c[i] ? 1 : 0;
  return mismatches;
}

template <bool kWrongLayout>
int run_tf32_mma() {
  const int mismatches = tf32_mma_mismatches<kWrongLayout>();
  return report(mismatches == 0,
                "mma m16n8k8 tf32 16x8 * 8x8: " + std::to_string(mismatches) + " mismatches");
}

// to_tf32 against an independent rounding: x's significand to 11 bits, half
// away from zero (std::round), in long double; inf and NaN kept.
int run_tf32_round() {
  std::vector<float> values = {1.0f, -1.0f, 0.0f, -0.0f, 1.0f + 0x1p-11f, 1.0f + 0x1p-10f,
                               1.0f + 3 * 0x1p-11f, -(1.0f + 0x1p-11f), 3.14159265f,
                               0x1.fffffep127f, 1e-40f, -2.5e-39f, 65504.7f};
  for (int i = 0; i < 2000; ++i) {
    const double u = std::sin(1.0 + i * 0.7307) * std::pow(10.0, (i % 61) - 30);
    values.push_back(static_cast<float>(u));
  }
  int wrong = 0;
  for (float x : values) {
    const float got = alexnet_kernels::kernels::to_tf32(x);
    float expected = x;
    if (std::isfinite(x) && x != 0.0f) {
      int exponent = 0;
      const long double m = std::frexp(static_cast<long double>(x), &exponent);
      // Below the normal range fp32 has fewer bits; TF32 keeps the same absolute step.
      const int bits = exponent < -125 ? 11 - (-125 - exponent) : 11;
      const long double rounded = std::ldexp(std::round(std::ldexp(m, bits)), exponent - bits);
      expected = static_cast<float>(rounded);  // may overflow to inf, as the hardware does
    }
    const bool same = std::isnan(x) ? std::isnan(got)
                                    : std::memcmp(&got, &expected, sizeof(float)) == 0;
    wrong += same ? 0 : 1;
  }
  const float nan_in = std::nanf("");
  wrong += std::isnan(alexnet_kernels::kernels::to_tf32(nan_in)) ? 0 : 1;
  wrong += alexnet_kernels::kernels::to_tf32(INFINITY) == INFINITY ? 0 : 1;
  wrong += alexnet_kernels::kernels::to_tf32(-INFINITY) == -INFINITY ? 0 : 1;
  return report(wrong == 0, "to_tf32 on " + std::to_string(values.size() + 3) + " values: " +
                                std::to_string(wrong) + " wrong");
}

// --- efficiency counters ------------------------------------------------------

// Zero-filled floats at a 128-byte boundary, so that sector counts are exact.
class AlignedFloats {
 public:
  explicit AlignedFloats(std::size_t n)
      : data_(static_cast<float*>(std::aligned_alloc(128, (n * sizeof(float) + 127) / 128 * 128))) {
    for (std::size_t i = 0; i < n; ++i) data_[i] = static_cast<float>(i % 7);
  }
  ~AlignedFloats() { std::free(data_); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* get() const { return data_; }
  float4* get4() const { return reinterpret_cast<float4*>(data_); }

 private:
  float* data_;
};

// Runs `launch` between counters_begin(sample) and counters_end().
std::string counted(const std::function<void()>& launch, std::uint64_t sample = 0) {
  ak_emu::counters_begin(sample);
  launch();
  return ak_emu::counters_end();
}

int run_counters() {
  namespace c = selftest::counters;
  AlignedFloats in(4096), out(4096);
  std::vector<std::pair<std::string, std::string>> cases;
  cases.emplace_back("coalesced", counted([&] {
    AK_LAUNCH(c::coalesced, 1, 64, 0, nullptr)(in.get(), out.get());
  }));
  cases.emplace_back("strided", counted([&] {
    AK_LAUNCH(c::strided, 1, 32, 0, nullptr)(in.get(), out.get());
  }));
  cases.emplace_back("broadcast", counted([&] {
    AK_LAUNCH(c::broadcast, 1, 32, 0, nullptr)(in.get(), out.get());
  }));
  cases.emplace_back("column-unpadded", counted([&] {
    auto kernel = &c::column_read<0>;
    AK_LAUNCH(kernel, 1, 32, 0, nullptr)(out.get());
  }));
  cases.emplace_back("column-padded", counted([&] {
    auto kernel = &c::column_read<1>;
    AK_LAUNCH(kernel, 1, 32, 0, nullptr)(out.get());
  }));
  cases.emplace_back("vectors", counted([&] {
    AK_LAUNCH(c::vectors, 1, 32, 64 * sizeof(float4), nullptr)(in.get4(), out.get4());
  }));
  cases.emplace_back("divergent", counted([&] {
    AK_LAUNCH(c::divergent, 1, 32, 0, nullptr)(in.get(), out.get());
  }));
  cases.emplace_back("mma-padded", counted([&] {
    auto kernel = &c::mma_padded<__nv_bfloat16>;
    AK_LAUNCH(kernel, 1, 32, 0, nullptr)(out.get());
  }));
  cases.emplace_back("mma-tf32-padded", counted([&] {
    AK_LAUNCH(c::mma_tf32_padded, 1, 32, 0, nullptr)(out.get());
  }));
  cases.emplace_back("cp-async-zero-fill", counted([&] {
    AK_LAUNCH(c::cp_async_zero_fill, 1, 32, 0, nullptr)(in.get());
  }));
  cases.emplace_back("ldmatrix-unswizzled", counted([&] {
    auto kernel = &c::ldmatrix_rows<false>;
    AK_LAUNCH(kernel, 1, 32, 0, nullptr)(out.get());
  }));
  cases.emplace_back("ldmatrix-swizzled", counted([&] {
    auto kernel = &c::ldmatrix_rows<true>;
    AK_LAUNCH(kernel, 1, 32, 0, nullptr)(out.get());
  }));
  // 10 blocks, 3 sampled (0, 5, 9); the blocks skipped leave out[] as it was.
  for (int i = 0; i < 320; ++i) out.get()[i] = -1.0f;
  cases.emplace_back("sampled", counted([&] {
    AK_LAUNCH(c::coalesced, 10, 32, 0, nullptr)(in.get(), out.get());
  }, 3));
  int written = 0;
  for (int i = 0; i < 320; ++i) written += out.get()[i] != -1.0f ? 1 : 0;
  cases.emplace_back("sampled-written-elements", std::to_string(written));
  // Off again: a launch after counters_end() runs every block and records nothing.
  AK_LAUNCH(c::coalesced, 10, 32, 0, nullptr)(in.get(), out.get());
  written = 0;
  for (int i = 0; i < 320; ++i) written += out.get()[i] != -1.0f ? 1 : 0;
  cases.emplace_back("unsampled-written-elements", std::to_string(written));
  std::string json = "{";
  for (std::size_t i = 0; i < cases.size(); ++i) {
    json += (i == 0 ? "\"" : ",\"") + cases[i].first + "\":" + cases[i].second;
  }
  std::printf("%s}\n", json.c_str());
  return kPass;
}

const std::map<std::string, std::function<int()>>& commands() {
  static const std::map<std::string, std::function<int()>> table = {
      {"matmul", run_matmul<false>},
      {"reduce", run_reduce},
      {"convert", run_convert},
      {"warp", run_warp},
      {"warp-partial", run_warp_partial},
      {"atomics", run_atomics},
      {"early-exit", run_early_exit},
      {"barrier-predicates", run_barrier_predicates},
      {"mma", run_mma<false>},
      {"mma-wrong-layout", run_mma<true>},
      {"mma-tf32", run_tf32_mma<false>},
      {"mma-tf32-wrong-layout", run_tf32_mma<true>},
      {"cp-async", run_cp_async<false>},
      {"cp-async-read-before-wait", run_cp_async<true>},
      {"cp-async-unwaited", [] { return run_cp_async_broken("unwaited"); }},
      {"cp-async-misaligned", [] { return run_cp_async_broken("misaligned"); }},
      {"cp-async-bad-size", [] { return run_cp_async_broken("bad-size"); }},
      {"cp-async-race", [] { return run_cp_async_broken("race"); }},
      {"ldmatrix", run_ldmatrix<false>},
      {"ldmatrix-wrong-rows", run_ldmatrix<true>},
      {"ldmatrix-misaligned", run_ldmatrix_misaligned},
      {"tf32-round", run_tf32_round},
      {"counters", run_counters},
      {"race", run_matmul<true>},
      {"overflow", run_overflow},
      {"misaligned", run_misaligned},
      {"divergent", run_divergent},
      {"unwritten-shared", run_unwritten_shared},
      {"hang", run_hang},
      {"deadlock", run_deadlock},
      {"bad-launch", run_bad_launch},
      {"partial-mask", run_partial_mask},
      {"inactive-lane", run_inactive_lane},
  };
  return table;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || commands().count(argv[1]) == 0) {
    std::fprintf(stderr, "usage: %s <command>\ncommands:", argv[0]);
    for (const auto& [name, fn] : commands()) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return kUsage;
  }
  try {
    return commands().at(argv[1])();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "launch error: %s\n", e.what());
    return kLaunchError;
  }
}
