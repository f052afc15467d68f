// Cross-channel local response normalisation, forward and backward, as CUDA
// kernels (no PyTorch includes: the same source runs on the CPU in the tests).
//
//   y[c] = x[c] * S[c]^-beta,   S[c] = k + alpha/size * sum_{j = c-lo}^{c+hi} x[j]^2
//   lo = size / 2, hi = (size - 1) / 2, channels outside [0, C) count as zero.
//
// Both layouts read every input element from DRAM once and use no shared memory:
//
// * (N, C, pixels): a thread owns kVec pixels (one 16-byte vector) of one image
//   and walks all C channels, the window sum of each pixel a running sum in
//   registers (add the entering channel's square, subtract the leaving one's).
//   The channel planes start anywhere relative to 16 bytes (AlexNet's planes of
//   3025 / 729 pixels are odd), so a warp loads and stores the aligned 16-byte
//   chunks that cover its 32 x kVec pixels and passes each lane the part that
//   belongs to its neighbour with one shuffle (lrn_exchange_load/store): 512-byte
//   requests, one partly used sector at each end. The leaving and the centre
//   channel are read again (from L1/L2: the block read them at most `size`
//   channels before), so DRAM sees x once.
// * (N, pixels, C): a warp owns one pixel, its lanes 32 consecutive channels
//   (one aligned 32-element request whenever C is a multiple of 32, as in
//   AlexNet); each window is summed directly, the neighbours' squares through
//   shuffles and the ones beyond the 32 channels read directly.
//
// The running sums bound their own rounding error: `mag` adds up the magnitude
// of every operand rounded since the sum was last computed directly, so the
// absolute error is at most about 2 eps * mag; when mag exceeds kLrnRecompute
// times the sum (a large square left the window, or a NaN / inf entered), the
// warp sums the window directly again. The relative error of a window sum is
// therefore at most about 2 * kLrnRecompute * eps (4e-6 in fp32), and a
// non-finite value in the window gives exactly the direct sum's inf or NaN.
#pragma once

#include "common.cuh"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace alexnet_kernels::kernels {

constexpr int kLrnThreads = 256;
constexpr int kLrnWarps = kLrnThreads / 32;
constexpr unsigned kLrnFullMask = 0xffffffffu;
constexpr int64_t kLrnMaxGridX = 2147483647;
// See the header comment: the error bound of the running sums, traded against
// how often a warp re-sums a window (about every kLrnRecompute channels).
constexpr int kLrnRecompute = 16;

// The exponents with a fast path: S^-0.75 = r * (r * rsqrt(r)) with r = rsqrt(S), and
// S^-0.5 = rsqrt(S), 1/S = rsqrt(S)^2; any other beta takes pow and a division.
enum class LrnBeta { kGeneral = 0, kThreeQuarters = 1, kHalf = 2 };
// The kernels' template argument for each case (a type, so that kernel names read
// lrn_forward_kernel<float, false, LrnBeta075>).
struct LrnBetaAny {};
struct LrnBeta075 {};
struct LrnBeta050 {};

inline LrnBeta lrn_beta_case(double beta) {
  if (beta == 0.75) {
    return LrnBeta::kThreeQuarters;
  }
  return beta == 0.5 ? LrnBeta::kHalf : LrnBeta::kGeneral;
}

struct LrnProblem {
  int64_t batch;
  int64_t channels;
  int64_t pixels;
  bool channels_last;
  int size;
  double alpha;
  double beta;
  double k;
};

// Launch geometry; `valid` is false when the grid exceeds CUDA's limits, and
// `reason` then says why.
struct LrnPlan {
  bool valid;
  const char* reason;
  int64_t pixel_tiles;  // (N, C, pixels): blocks per image
  dim3 grid;
};

template <typename Acc>
struct LrnArgs {
  int64_t channels;
  int64_t pixels;
  int64_t pixel_tiles;
  int64_t rows;  // N * pixels (channels_last)
  int half_lo;   // window of channel c is [c - half_lo, c + half_hi]
  int half_hi;
  Acc alpha_over_size;
  Acc neg_beta;
  Acc k;
  Acc grad_coef;  // 2 * alpha * beta / size, applied as x * (grad_coef * sum) (see lrn.cpp)
};

// Elements per 16-byte vector.
template <typename T>
constexpr int lrn_vec() {
  return static_cast<int>(16 / sizeof(T));
}

inline LrnPlan plan_lrn(const LrnProblem& problem, size_t element_bytes) {
  LrnPlan plan{};
  plan.valid = true;
  int64_t blocks = 0;
  if (problem.channels_last) {
    blocks = ceil_div<int64_t>(problem.batch * problem.pixels, kLrnWarps);
  } else {
    const int64_t per_block = kLrnThreads * static_cast<int64_t>(16 / element_bytes);
    plan.pixel_tiles = ceil_div<int64_t>(problem.pixels, per_block);
    blocks = problem.batch * plan.pixel_tiles;
  }
  if (blocks > kLrnMaxGridX) {
    plan.valid = false;
    plan.reason = "the tensor has more (N x pixel) tiles than a CUDA grid can cover";
  }
  plan.grid = dim3(static_cast<unsigned>(ak_min<int64_t>(blocks, kLrnMaxGridX)), 1, 1);
  return plan;
}

template <typename Acc>
LrnArgs<Acc> make_lrn_args(const LrnProblem& problem, const LrnPlan& plan) {
  LrnArgs<Acc> args{};
  args.channels = problem.channels;
  args.pixels = problem.pixels;
  args.pixel_tiles = plan.pixel_tiles;
  args.rows = problem.batch * problem.pixels;
  args.half_lo = problem.size / 2;
  args.half_hi = (problem.size - 1) / 2;
  args.alpha_over_size = static_cast<Acc>(problem.alpha / problem.size);
  args.neg_beta = static_cast<Acc>(-problem.beta);
  args.k = static_cast<Acc>(problem.k);
  args.grad_coef = static_cast<Acc>(2.0 * problem.alpha * problem.beta / problem.size);
  return args;
}

// ---- the exponent -----------------------------------------------------------------

AK_DEVICE_INLINE float lrn_rsqrt(float v) { return rsqrtf(v); }
AK_DEVICE_INLINE double lrn_rsqrt(double v) { return rsqrt(v); }

// S^-beta. S = -0 (k = -0, a zero window) must give pow's +inf, not rsqrt's -inf:
// S + 0 turns -0 into +0 and changes nothing else.
template <typename Beta, typename Acc>
AK_DEVICE_INLINE Acc lrn_pow(Acc s, Acc neg_beta) {
  if constexpr (std::is_same_v<Beta, LrnBeta075>) {
    // r^1.5 as r * (r * rsqrt(r)): no sqrt (whose IEEE slow path is a call), no
    // intermediate overflow; r = 0 (S = inf) and r = inf (S = 0) are their own answer.
    const Acc r = lrn_rsqrt(s + Acc(0));
    const bool edge = r == Acc(0) || r > std::numeric_limits<Acc>::max();
    return edge ? r : r * (r * lrn_rsqrt(r));
  } else if constexpr (std::is_same_v<Beta, LrnBeta050>) {
    return lrn_rsqrt(s + Acc(0));
  } else {
    return power(s, neg_beta);
  }
}

// 1 / S. With a fast-path beta, S < 0 makes y NaN already (a fractional power of a
// negative number), so rsqrt(S)^2 gives the same NaN term as the division would.
template <typename Beta, typename Acc>
AK_DEVICE_INLINE Acc lrn_reciprocal(Acc s) {
  if constexpr (std::is_same_v<Beta, LrnBetaAny>) {
    return Acc(1) / s;
  } else {
    const Acc r = lrn_rsqrt(s + Acc(0));
    return r * r;
  }
}

// ---- 16-byte vectors and the warp's exchange ----------------------------------------

template <typename T>
struct alignas(16) LrnPack {
  T v[lrn_vec<T>()];
};

// The next lane's pack (four 32-bit shuffles).
template <typename T>
AK_DEVICE_INLINE LrnPack<T> lrn_shfl_down(const LrnPack<T>& p) {
  unsigned words[4];
  memcpy(words, &p, sizeof(words));
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    words[i] = __shfl_down_sync(kLrnFullMask, words[i], 1);
  }
  LrnPack<T> out;
  memcpy(&out, words, sizeof(words));
  return out;
}

// (a ++ b) from element `shift` on, shift in [0, kVec): word selects and funnel
// shifts, no branches (a runtime index into a register array would put it in local
// memory).
template <typename T>
AK_DEVICE_INLINE LrnPack<T> lrn_funnel(const LrnPack<T>& a, const LrnPack<T>& b, int shift) {
  unsigned w[8];
  memcpy(w, &a, 16);
  memcpy(w + 4, &b, 16);
  const int bytes = shift * static_cast<int>(sizeof(T));
  const int word = bytes >> 2;
  const unsigned bits = static_cast<unsigned>(bytes & 3) * 8;
  unsigned picked[5];
#pragma unroll
  for (int j = 0; j < 5; ++j) {
    picked[j] = word == 0 ? w[j] : word == 1 ? w[j + 1] : word == 2 ? w[j + 2] : w[j + 3];
  }
  unsigned out_words[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    out_words[j] = bits == 0 ? picked[j] : (picked[j] >> bits) | (picked[j + 1] << (32 - bits));
  }
  LrnPack<T> out;
  memcpy(&out, out_words, 16);
  return out;
}

// Elements from `p` to the next 16-byte boundary (p is element-aligned).
template <typename T>
AK_DEVICE_INLINE int lrn_head(const T* p) {
  return static_cast<int>((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) /
         static_cast<int>(sizeof(T));
}

template <typename T>
AK_DEVICE_INLINE T lrn_zero() {
  return from_acc<T>(acc_t<T>(0));
}

// The kVec elements at p (lane l of a warp at p0 + l * kVec) by aligned 16-byte
// loads: the chunk that starts `head` elements after p holds the lane's last
// kVec - head elements, the chunk before it the first head ones (and the previous
// lane's last, so each chunk is requested twice by the warp, the second time from
// L1). Elements from `limit` on (past the plane's end) read as 0 and are never
// touched: a chunk that reaches them is read element by element, as is the part of
// lane 0's first chunk that lies before the plane.
template <bool kInterior, typename T>
AK_DEVICE_INLINE void lrn_exchange_load(const T* p, bool at_plane_start, int64_t limit, T* own) {
  constexpr int kVec = lrn_vec<T>();
  const int head = lrn_head(p);
  LrnPack<T> chunk, before;
  if (kInterior || head + kVec <= limit) {
    chunk = ak_ld(reinterpret_cast<const LrnPack<T>*>(p + head));
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      chunk.v[i] = head + i < limit ? ak_ld(p + head + i) : lrn_zero<T>();
    }
  }
  if (head == 0) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      own[i] = chunk.v[i];
    }
    return;
  }
  if (kInterior || (!at_plane_start && head <= limit)) {
    before = ak_ld(reinterpret_cast<const LrnPack<T>*>(p + head - kVec));
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      before.v[i] = lrn_zero<T>();
      if (i >= kVec - head && i - (kVec - head) < limit) {
        before.v[i] = ak_ld(p + i - (kVec - head));
      }
    }
  }
  const LrnPack<T> mine = lrn_funnel(before, chunk, kVec - head);
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    own[i] = mine.v[i];
  }
}

// The store of lrn_exchange_load's layout: lanes 0..30 store the chunk that starts
// `head` elements after their first one; the chunks that straddle two warps, and
// those that reach `limit`, are stored element by element.
template <bool kInterior, typename T>
AK_DEVICE_INLINE void lrn_exchange_store(T* p, int lane, int64_t limit, const T* own) {
  constexpr int kVec = lrn_vec<T>();
  const int head = lrn_head(p);
  LrnPack<T> mine;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    mine.v[i] = own[i];
  }
  const LrnPack<T> next = lrn_shfl_down(mine);  // by every lane, whatever `head`
  if (head == 0) {
    if (kInterior || kVec <= limit) {
      ak_st(reinterpret_cast<LrnPack<T>*>(p), mine);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        if (i < limit) {
          ak_st(p + i, own[i]);
        }
      }
    }
    return;
  }
  if (lane < 31 && (kInterior || head + kVec <= limit)) {
    ak_st(reinterpret_cast<LrnPack<T>*>(p + head), lrn_funnel(mine, next, head));
  } else if (!kInterior && lane < 31) {
    const LrnPack<T> chunk = lrn_funnel(mine, next, head);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      if (head + i < limit) {
        ak_st(p + head + i, chunk.v[i]);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      if (i >= head && (kInterior || i < limit)) {
        ak_st(p + i, own[i]);
      }
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      if (i < head && (kInterior || i < limit)) {
        ak_st(p + i, own[i]);
      }
    }
  }
}

// ---- (N, C, pixels): the pixels of one lane --------------------------------------

// The kVec consecutive pixels of a plane that a lane owns, from `first`; `limit` is
// the number of them (and beyond) inside the plane. kInterior: the warp is neither
// the first of its plane nor within 33 vectors of its end, so every chunk it touches
// lies inside the plane and the element-wise fallbacks are compiled out (the other
// warps run a copy of the channel walk with them).
template <typename T, bool kInterior>
struct LrnLane {
  int64_t first;
  int64_t limit;
  int lane;

  AK_DEVICE_INLINE void load(const T* plane, T* own) const {
    lrn_exchange_load<kInterior>(plane + first, first == 0, limit, own);
  }
  AK_DEVICE_INLINE void store(T* plane, const T* own) const {
    lrn_exchange_store<kInterior>(plane + first, lane, limit, own);
  }
};

// The block's image and the lane's pixels; `active` is false for a warp past the
// end of the plane (warp-uniform, so it may return).
template <typename T, typename Acc>
AK_DEVICE_INLINE LrnLane<T, false> lrn_lane(const LrnArgs<Acc>& a, int64_t& n, bool& active,
                                            bool& interior) {
  constexpr int kVec = lrn_vec<T>();
  // 32-bit: a 64-bit division is a called routine whose calling convention spills.
  const unsigned tiles = static_cast<unsigned>(a.pixel_tiles);  // <= the grid size
  const unsigned image = blockIdx.x / tiles;
  n = image;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t warp_first =
      static_cast<int64_t>(blockIdx.x - image * tiles) * (kLrnThreads * kVec) +
      warp * (32 * kVec);
  LrnLane<T, false> view{};
  view.lane = lane;
  view.first = warp_first + lane * kVec;
  view.limit = a.pixels - view.first;
  active = warp_first < a.pixels;
  interior = warp_first > 0 && warp_first + 33 * kVec <= a.pixels;
  return view;
}

template <typename T>
AK_DEVICE_INLINE acc_t<T> lrn_square(T v) {
  const acc_t<T> a = to_acc(v);
  return a * a;
}

// The window sums S-k of one lane's kVec pixels at channel `pos`, kept by the
// recurrence of the header comment. Advancing is the same computation whatever
// the caller, so two windows at the same position hold the same bits (the
// backward relies on that to subtract exactly what it added). The caller passes
// the position: derived from its channel loop it stays in uniform registers, a
// copy per window would hold two more registers per window (the fp64 backward
// spilled one at ptxas's 80-register, 3-blocks-per-SM limit).
template <typename T, bool kInterior>
struct LrnWindow {
  using Acc = acc_t<T>;
  static constexpr int kVec = lrn_vec<T>();
  Acc sum[kVec];
  Acc mag[kVec];

  AK_DEVICE_INLINE void direct(int64_t pos, const T* x, const LrnLane<T, kInterior>& view,
                               const LrnArgs<Acc>& a) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      sum[i] = 0;
    }
    const int64_t last = ak_min<int64_t>(pos + a.half_hi, a.channels - 1);
    for (int64_t j = ak_max<int64_t>(pos - a.half_lo, 0); j <= last; ++j) {
      T v[kVec];
      view.load(x + j * a.pixels, v);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        sum[i] += lrn_square(v[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      mag[i] = sum[i];
    }
  }

  // From pos - 1 to pos; `x` is the image's first plane. Positions below 0 hold
  // nothing.
  AK_DEVICE_INLINE void advance(int64_t pos, const T* x, const LrnLane<T, kInterior>& view,
                                const LrnArgs<Acc>& a) {
    if (pos < 0) {
      return;
    }
    if (pos == 0) {
      direct(pos, x, view, a);
      return;
    }
    T enter[kVec], leave[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      enter[i] = leave[i] = from_acc<T>(Acc(0));
    }
    if (pos + a.half_hi < a.channels) {
      view.load(x + (pos + a.half_hi) * a.pixels, enter);
    }
    if (pos - a.half_lo - 1 >= 0 && pos - a.half_lo - 1 < a.channels) {
      view.load(x + (pos - a.half_lo - 1) * a.pixels, leave);
    }
    bool redo = false;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const Acc in = sum[i] + lrn_square(enter[i]);
      mag[i] += in;
      sum[i] = in - lrn_square(leave[i]);
      redo |= !(mag[i] <= Acc(kLrnRecompute) * sum[i]);
    }
    if (__any_sync(kLrnFullMask, redo)) {  // the whole warp: coalesced re-reads
      direct(pos, x, view, a);
    }
  }

  AK_DEVICE_INLINE Acc scale(int i, const LrnArgs<Acc>& a) const {
    return a.k + a.alpha_over_size * sum[i];
  }
};

template <typename T, typename Beta, bool kInterior>
AK_DEVICE_INLINE void lrn_forward_walk(const T* x, T* y, const LrnLane<T, kInterior>& view,
                                       const LrnArgs<acc_t<T>>& a) {
  constexpr int kVec = lrn_vec<T>();
  LrnWindow<T, kInterior> window{};
  for (int64_t c = 0; c < a.channels; ++c) {
    window.advance(c, x, view, a);
    T v[kVec];
    view.load(x + c * a.pixels, v);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      v[i] = from_acc<T>(to_acc(v[i]) * lrn_pow<Beta>(window.scale(i, a), a.neg_beta));
    }
    view.store(y + c * a.pixels, v);
  }
}

template <typename T, typename Beta>
AK_DEVICE_INLINE void lrn_forward_nchw(const T* __restrict__ x_all, T* __restrict__ y_all,
                                       const LrnArgs<acc_t<T>>& a) {
  int64_t n;
  bool active, interior;
  const LrnLane<T, false> view = lrn_lane<T>(a, n, active, interior);
  if (!active) {
    return;
  }
  const int64_t image = n * a.channels * a.pixels;
  // `interior` is warp-uniform, but ptxas cannot see that in a value derived from
  // threadIdx; inside a branch on it, it guards every shuffle and vote with a
  // divergence test and an out-of-line fallback that needs a stack frame. A vote's
  // result is uniform to ptxas, so the walks inside compile to plain SHFL / VOTE.
  if (__all_sync(kLrnFullMask, interior)) {
    const LrnLane<T, true> inner{view.first, view.limit, view.lane};
    lrn_forward_walk<T, Beta>(x_all + image, y_all + image, inner, a);
  } else {
    lrn_forward_walk<T, Beta>(x_all + image, y_all + image, view, a);
  }
}

// grad_x[c] = g[c] S[c]^-beta - grad_coef * x[c] * T[c],  T[c] = sum_{c' = c-hi}^{c+lo} t[c'],
// t = g y / S. T is a running sum too: t enters at c + 1 + lo (window `lead`) and
// leaves at c - hi (window `lag`, the same recurrence `size` channels behind, so the
// leaving t has the bits the entering one had). Its error is bounded the same way,
// against the window's sum of |t|; re-summing it computes each t of the window from
// a directly summed S.
template <typename T, typename Beta, bool kInterior>
struct LrnTerms {
  using Acc = acc_t<T>;
  static constexpr int kVec = lrn_vec<T>();
  const T* x;
  const T* g;
  const T* y;
  const LrnLane<T, kInterior>* view;
  const LrnArgs<Acc>* a;

  // t at channel c for S - k = sum (zero outside the channels).
  AK_DEVICE_INLINE void at(int64_t c, const Acc* sum, Acc* t) const {
    if (c < 0 || c >= a->channels) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        t[i] = 0;
      }
      return;
    }
    T gv[kVec], yv[kVec];
    view->load(g + c * a->pixels, gv);
    view->load(y + c * a->pixels, yv);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      t[i] = to_acc(gv[i]) * to_acc(yv[i]) *
             lrn_reciprocal<Beta>(a->k + a->alpha_over_size * sum[i]);
    }
  }

  // T and sum |t| over the window of channel c, from directly summed S.
  AK_DEVICE_INLINE void direct(int64_t c, Acc* total, Acc* abs_total) const {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      total[i] = abs_total[i] = 0;
    }
    const int64_t last = ak_min<int64_t>(c + a->half_lo, a->channels - 1);
    for (int64_t j = ak_max<int64_t>(c - a->half_hi, 0); j <= last; ++j) {
      LrnWindow<T, kInterior> w{};
      w.direct(j, x, *view, *a);
      Acc t[kVec];
      at(j, w.sum, t);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        total[i] += t[i];
        abs_total[i] += t[i] < 0 ? -t[i] : t[i];
      }
    }
  }
};

template <typename T, typename Beta, bool kInterior>
AK_DEVICE_INLINE void lrn_backward_walk(const T* g, const T* x, const T* y, T* gx,
                                        const LrnLane<T, kInterior>& view,
                                        const LrnArgs<acc_t<T>>& a) {
  using Acc = acc_t<T>;
  constexpr int kVec = lrn_vec<T>();
  const LrnTerms<T, Beta, kInterior> terms{x, g, y, &view, &a};
  LrnWindow<T, kInterior> mid{}, lead{}, lag{};  // at c, c + 1 + lo and c - hi
  Acc total[kVec], abs_total[kVec], mag[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    total[i] = abs_total[i] = 0;
  }
  for (int j = 0; j <= a.half_lo; ++j) {  // T of channel 0: t[0 .. lo]
    lead.advance(j, terms.x, view, a);
    Acc t[kVec];
    terms.at(j, lead.sum, t);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      total[i] += t[i];
      abs_total[i] += t[i] < 0 ? -t[i] : t[i];
    }
  }
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    mag[i] = abs_total[i];
  }
  for (int64_t c = 0; c < a.channels; ++c) {
    mid.advance(c, terms.x, view, a);
    T gv[kVec], xv[kVec];
    view.load(terms.g + c * a.pixels, gv);
    view.load(terms.x + c * a.pixels, xv);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const Acc grad = to_acc(gv[i]) * lrn_pow<Beta>(mid.scale(i, a), a.neg_beta) -
                       to_acc(xv[i]) * (a.grad_coef * total[i]);
      gv[i] = from_acc<T>(grad);
    }
    view.store(gx + c * a.pixels, gv);
    if (c + 1 == a.channels) {
      break;
    }
    lead.advance(c + 1 + a.half_lo, terms.x, view, a);
    lag.advance(c - a.half_hi, terms.x, view, a);
    Acc t_in[kVec], t_out[kVec];
    terms.at(c + 1 + a.half_lo, lead.sum, t_in);
    terms.at(c - a.half_hi, lag.sum, t_out);
    bool redo = false;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const Acc abs_in = t_in[i] < 0 ? -t_in[i] : t_in[i];
      const Acc abs_out = t_out[i] < 0 ? -t_out[i] : t_out[i];
      const Acc abs_total_in = total[i] < 0 ? -total[i] : total[i];
      mag[i] += abs_total_in + abs_in + abs_out;
      total[i] = (total[i] + t_in[i]) - t_out[i];
      abs_total[i] = (abs_total[i] + abs_in) - abs_out;
      redo |= !(mag[i] <= Acc(kLrnRecompute) * abs_total[i]);
    }
    if (__any_sync(kLrnFullMask, redo)) {
      terms.direct(c + 1, total, abs_total);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        mag[i] = abs_total[i];
      }
    }
  }
}

template <typename T, typename Beta>
AK_DEVICE_INLINE void lrn_backward_nchw(const T* __restrict__ g_all, const T* __restrict__ x_all,
                                        const T* __restrict__ y_all, T* __restrict__ gx_all,
                                        const LrnArgs<acc_t<T>>& a) {
  int64_t n;
  bool active, interior;
  const LrnLane<T, false> view = lrn_lane<T>(a, n, active, interior);
  if (!active) {
    return;
  }
  const int64_t image = n * a.channels * a.pixels;
  if (__all_sync(kLrnFullMask, interior)) {  // a vote: see lrn_forward_nchw
    const LrnLane<T, true> inner{view.first, view.limit, view.lane};
    lrn_backward_walk<T, Beta>(g_all + image, x_all + image, y_all + image, gx_all + image, inner,
                               a);
  } else {
    lrn_backward_walk<T, Beta>(g_all + image, x_all + image, y_all + image, gx_all + image, view,
                               a);
  }
}

// ---- (N, pixels, C): a warp per pixel --------------------------------------------

// A warp walks its pixel's channels in chunks of 32, one per lane, so that every
// element is loaded once, by a full aligned 32-lane request. The values a window
// needs (squares, and the backward's t) go to a warp-private ring of 4 chunks in
// shared memory, read back as ring[channel % 128] (consecutive lanes, consecutive
// banks): the chunks before and after the current one are there, one __syncwarp
// per chunk (the slot written next was last read two chunks ago). Windows are
// summed in channel order, as direct sums (no running-sum error). This needs
// lo, hi <= 32 (size <= 65); larger windows take lrn_*_cl_wide, which reads each
// window from global memory.
constexpr int kLrnChunkMaxHalf = 32;
constexpr int kLrnRing = 4 * 32;

template <typename Acc>
AK_DEVICE_INLINE Acc lrn_ring_window(const Acc* ring, int64_t c, int before, int after,
                                     int64_t channels) {
  Acc sum = 0;
  const int64_t last = ak_min<int64_t>(c + after, channels - 1);
  for (int64_t j = ak_max<int64_t>(c - before, 0); j <= last; ++j) {
    sum += ak_ld(ring + (j & (kLrnRing - 1)));
  }
  return sum;
}

template <typename T>
AK_DEVICE_INLINE acc_t<T> lrn_load_acc(const T* p, int64_t c, int64_t channels) {
  return c < channels ? to_acc(ak_ld(p + c)) : acc_t<T>(0);
}

template <typename T, typename Beta>
AK_DEVICE_INLINE void lrn_forward_cl(const T* x, T* y, int lane, acc_t<T>* q_ring,
                                     const LrnArgs<acc_t<T>>& a) {
  using Acc = acc_t<T>;
  Acc x_cur = lrn_load_acc(x, lane, a.channels);
  ak_st(q_ring + lane, x_cur * x_cur);
  for (int64_t c0 = 0; c0 < a.channels; c0 += 32) {
    const int64_t c = c0 + lane;
    const Acc x_next = lrn_load_acc(x, c + 32, a.channels);
    ak_st(q_ring + ((c + 32) & (kLrnRing - 1)), x_next * x_next);
    __syncwarp();
    if (c < a.channels) {
      const Acc sum = lrn_ring_window(q_ring, c, a.half_lo, a.half_hi, a.channels);
      ak_st(y + c, from_acc<T>(x_cur * lrn_pow<Beta>(a.k + a.alpha_over_size * sum, a.neg_beta)));
    }
    x_cur = x_next;
  }
}

// The backward runs one chunk ahead: t of chunk k + 1 needs S there, i.e. the
// squares of chunk k + 2.
template <typename T, typename Beta>
AK_DEVICE_INLINE void lrn_backward_cl(const T* g, const T* x, const T* y, T* gx, int lane,
                                      acc_t<T>* q_ring, acc_t<T>* t_ring,
                                      const LrnArgs<acc_t<T>>& a) {
  using Acc = acc_t<T>;
  const auto slot = [](int64_t c) { return c & (kLrnRing - 1); };
  // S and t of channel c (whose squares are in the ring); g[c] in g_c.
  const auto scale_and_term = [&](int64_t c, Acc& scale, Acc& g_c) {
    scale = a.k + a.alpha_over_size * lrn_ring_window(q_ring, c, a.half_lo, a.half_hi,
                                                      a.channels);
    g_c = lrn_load_acc(g, c, a.channels);
    const Acc t = c < a.channels ? g_c * lrn_load_acc(y, c, a.channels) *
                                       lrn_reciprocal<Beta>(scale)
                                 : Acc(0);
    ak_st(t_ring + slot(c), t);
  };
  Acc x_cur = lrn_load_acc(x, lane, a.channels);
  Acc x_next = lrn_load_acc(x, lane + 32, a.channels);
  ak_st(q_ring + slot(lane), x_cur * x_cur);
  ak_st(q_ring + slot(lane + 32), x_next * x_next);
  __syncwarp();
  Acc s_cur, g_cur;
  scale_and_term(lane, s_cur, g_cur);
  for (int64_t c0 = 0; c0 < a.channels; c0 += 32) {
    const int64_t c = c0 + lane;
    const Acc x_after = lrn_load_acc(x, c + 64, a.channels);
    ak_st(q_ring + slot(c + 64), x_after * x_after);
    __syncwarp();
    Acc s_next, g_next;
    scale_and_term(c + 32, s_next, g_next);
    __syncwarp();
    if (c < a.channels) {
      const Acc total = lrn_ring_window(t_ring, c, a.half_hi, a.half_lo, a.channels);
      ak_st(gx + c, from_acc<T>(g_cur * lrn_pow<Beta>(s_cur, a.neg_beta) -
                                x_cur * (a.grad_coef * total)));
    }
    x_cur = x_next;
    x_next = x_after;
    s_cur = s_next;
    g_cur = g_next;
  }
}

// Windows wider than the chunks: each lane sums its windows from global memory
// (cached reads), t of each channel of the backward's window from its own S.
template <typename T>
AK_DEVICE_INLINE acc_t<T> lrn_wide_sum(const T* x, int64_t c, const LrnArgs<acc_t<T>>& a) {
  acc_t<T> sum = 0;
  const int64_t last = ak_min<int64_t>(c + a.half_hi, a.channels - 1);
  for (int64_t j = ak_max<int64_t>(c - a.half_lo, 0); j <= last; ++j) {
    sum += lrn_square(ak_ld(x + j));
  }
  return a.k + a.alpha_over_size * sum;
}

template <typename T, typename Beta>
AK_DEVICE_INLINE void lrn_forward_cl_wide(const T* x, T* y, int lane, const LrnArgs<acc_t<T>>& a) {
  for (int64_t c = lane; c < a.channels; c += 32) {
    ak_st(y + c, from_acc<T>(to_acc(ak_ld(x + c)) *
                             lrn_pow<Beta>(lrn_wide_sum(x, c, a), a.neg_beta)));
  }
}

template <typename T, typename Beta>
AK_DEVICE_INLINE void lrn_backward_cl_wide(const T* g, const T* x, const T* y, T* gx, int lane,
                                           const LrnArgs<acc_t<T>>& a) {
  using Acc = acc_t<T>;
  for (int64_t c = lane; c < a.channels; c += 32) {
    Acc total = 0;
    const int64_t last = ak_min<int64_t>(c + a.half_lo, a.channels - 1);
    for (int64_t j = ak_max<int64_t>(c - a.half_hi, 0); j <= last; ++j) {
      total += to_acc(ak_ld(g + j)) * to_acc(ak_ld(y + j)) *
               lrn_reciprocal<Beta>(lrn_wide_sum(x, j, a));
    }
    const Acc grad = to_acc(ak_ld(g + c)) * lrn_pow<Beta>(lrn_wide_sum(x, c, a), a.neg_beta) -
                     to_acc(ak_ld(x + c)) * (a.grad_coef * total);
    ak_st(gx + c, from_acc<T>(grad));
  }
}

// ---- kernels and launches ----------------------------------------------------------

template <typename T, bool kChannelsLast, typename Beta>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_forward_kernel(const T* __restrict__ x, T* __restrict__ y, LrnArgs<acc_t<T>> a) {
  if constexpr (kChannelsLast) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kLrnWarps + threadIdx.x / 32;
    if (row >= a.rows) {
      return;
    }
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int64_t at = row * a.channels;
    AK_SHARED_ARRAY(acc_t<T>, q_ring, [kLrnWarps][kLrnRing]);
    if (a.half_lo <= kLrnChunkMaxHalf && a.half_hi <= kLrnChunkMaxHalf) {
      lrn_forward_cl<T, Beta>(x + at, y + at, lane, q_ring[threadIdx.x / 32], a);
    } else {
      lrn_forward_cl_wide<T, Beta>(x + at, y + at, lane, a);
    }
  } else {
    lrn_forward_nchw<T, Beta>(x, y, a);
  }
}

template <typename T, bool kChannelsLast, typename Beta>
__global__ void __launch_bounds__(kLrnThreads)
    lrn_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                        const T* __restrict__ y, T* __restrict__ grad_x, LrnArgs<acc_t<T>> a) {
  if constexpr (kChannelsLast) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kLrnWarps + threadIdx.x / 32;
    if (row >= a.rows) {
      return;
    }
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int64_t at = row * a.channels;
    AK_SHARED_ARRAY(acc_t<T>, rings, [kLrnWarps][2][kLrnRing]);
    if (a.half_lo <= kLrnChunkMaxHalf && a.half_hi <= kLrnChunkMaxHalf) {
      acc_t<T>* q_ring = rings[threadIdx.x / 32][0];
      lrn_backward_cl<T, Beta>(grad_y + at, x + at, y + at, grad_x + at, lane, q_ring,
                               rings[threadIdx.x / 32][1], a);
    } else {
      lrn_backward_cl_wide<T, Beta>(grad_y + at, x + at, y + at, grad_x + at, lane, a);
    }
  } else {
    lrn_backward_nchw<T, Beta>(grad_y, x, y, grad_x, a);
  }
}

template <typename T, bool kChannelsLast>
auto lrn_forward_kernel_for(LrnBeta beta) {
  switch (beta) {
    case LrnBeta::kThreeQuarters:
      return &lrn_forward_kernel<T, kChannelsLast, LrnBeta075>;
    case LrnBeta::kHalf:
      return &lrn_forward_kernel<T, kChannelsLast, LrnBeta050>;
    default:
      return &lrn_forward_kernel<T, kChannelsLast, LrnBetaAny>;
  }
}

template <typename T, bool kChannelsLast>
auto lrn_backward_kernel_for(LrnBeta beta) {
  switch (beta) {
    case LrnBeta::kThreeQuarters:
      return &lrn_backward_kernel<T, kChannelsLast, LrnBeta075>;
    case LrnBeta::kHalf:
      return &lrn_backward_kernel<T, kChannelsLast, LrnBeta050>;
    default:
      return &lrn_backward_kernel<T, kChannelsLast, LrnBetaAny>;
  }
}

// Launch helpers shared by the CUDA launcher and the CPU emulation tests. The
// caller checks plan.valid and skips empty tensors (a zero-sized grid is invalid).
template <typename T>
void launch_lrn_forward(const T* x, T* y, const LrnProblem& problem, const LrnPlan& plan,
                        cudaStream_t stream) {
  const auto args = make_lrn_args<acc_t<T>>(problem, plan);
  const LrnBeta beta = lrn_beta_case(problem.beta);
  auto kernel = problem.channels_last ? lrn_forward_kernel_for<T, true>(beta)
                                      : lrn_forward_kernel_for<T, false>(beta);
  AK_LAUNCH(kernel, plan.grid, dim3(kLrnThreads), 0, stream)(x, y, args);
}

template <typename T>
void launch_lrn_backward(const T* grad_y, const T* x, const T* y, T* grad_x,
                         const LrnProblem& problem, const LrnPlan& plan, cudaStream_t stream) {
  const auto args = make_lrn_args<acc_t<T>>(problem, plan);
  const LrnBeta beta = lrn_beta_case(problem.beta);
  auto kernel = problem.channels_last ? lrn_backward_kernel_for<T, true>(beta)
                                      : lrn_backward_kernel_for<T, false>(beta);
  AK_LAUNCH(kernel, plan.grid, dim3(kLrnThreads), 0, stream)(grad_y, x, y, grad_x, args);
}

}  // namespace alexnet_kernels::kernels
