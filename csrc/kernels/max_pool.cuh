// 2-D max pooling, forward and backward, as CUDA kernels (no PyTorch
// includes: the same source runs on the CPU in the tests).
//
// Three designs, chosen by the host (launch_max_pool_*):
//
// * NCHW, staged (max_pool_*_staged_kernel): a block owns whole planes, or a
//   band of rows of one plane, so the input its outputs need (forward) or the
//   grad_y / argmax its inputs need (backward) is one contiguous range. It
//   copies that range to shared memory with aligned 16-byte loads (every
//   element read once, every sector whole), then works from there. Outputs
//   are mapped to threads from the 32-element boundary below the block's first
//   one, so each warp stores whole, aligned sectors (one 32-byte sector of a
//   1-byte argmax).
// * channels_last (max_pool_*_nhwc_kernel): lanes walk 32 consecutive channels
//   of one pixel (a coalesced request at every tap), a block a band of rows of
//   one image, so windows overlap within a block (L1) and only one row per
//   band is read twice.
// * anything else (NCHW rows too wide to stage): the generic kernels, one
//   thread per output / input element.
//
// No kernel divides by a runtime value per element: index splits use
// FastDivmod (a multiply-high and a shift with a host-computed multiplier),
// the window bounds are checked per tap instead of computed, and 3x3 windows
// that lie inside the input (AlexNet's) are unrolled at compile time, unchecked.
//
// Forward writes y and the argmax offset kh * kernel_w + kw inside the window
// (see window.h), nothing wider. Backward gathers, per input element, grad_y
// from the windows that cover it and whose argmax it is, in (oh, ow) order:
// every grad_x element is written exactly once, with no atomics, so results
// are deterministic.
#pragma once

#include "common.cuh"
#include "window.h"

namespace alexnet_kernels::kernels {

constexpr int kMaxPoolThreads = 256;
// Grid limits; larger problems loop (grid-stride) over planes and tiles.
constexpr int64_t kMaxPoolMaxTiles = 65536;
constexpr int64_t kMaxPoolMaxPlanes = 65535;

// The tensor as `planes` independent planes of 32-bit-indexable elements:
// an (image, channel) plane of H x W for NCHW, an image of H x W x C for NHWC.
// Only the plane offset needs 64 bits, and it needs no division, so the
// per-element arithmetic stays in 32-bit registers. The host checks that one
// plane of the input fits in 32-bit indexing.
struct PoolPlanes {
  int64_t planes;
  int in_plane;   // elements of one input plane
  int out_plane;  // elements of one output plane
  int channels;   // C for NHWC (element = pixel * C + c), 1 for NCHW
  int in_h;
  int in_w;
  int out_h;
  int out_w;
};

inline PoolPlanes make_pool_planes(const PoolWindow& w, bool channels_last) {
  PoolPlanes p{};
  const int64_t channels_per_plane = channels_last ? w.channels : 1;
  p.planes = channels_last ? w.batch : w.batch * w.channels;
  p.in_plane = static_cast<int>(w.in_h * w.in_w * channels_per_plane);
  p.out_plane = static_cast<int>(w.out_h * w.out_w * channels_per_plane);
  p.channels = static_cast<int>(channels_per_plane);
  p.in_h = static_cast<int>(w.in_h);
  p.in_w = static_cast<int>(w.in_w);
  p.out_h = static_cast<int>(w.out_h);
  p.out_w = static_cast<int>(w.out_w);
  return p;
}

// The window alone, as the kernels take it.
inline Window2d make_pool_taps(const PoolWindow& w) { return w; }

// Whether every plane of input and output is addressable with 32-bit ints.
inline bool pool_planes_fit_int32(const PoolWindow& w, bool channels_last) {
  const int64_t per_plane = channels_last ? w.channels : 1;
  return w.in_h * w.in_w * per_plane <= INT32_MAX && w.out_h * w.out_w * per_plane <= INT32_MAX;
}

// n / divisor and n % divisor for 0 <= n < 2^31 as a multiply-high and a shift
// (Granlund and Montgomery; the form CUTLASS's FastDivmod uses): with
// shift = ceil(log2 divisor) and multiplier = floor(2^32 (2^shift - divisor) / divisor) + 1,
// n / divisor = (umulhi(n, multiplier) + n) >> shift, which cannot overflow
// 32 bits for n < 2^31. The host computes the constants once per launch.
struct FastDivmod {
  int divisor;
  unsigned multiplier;
  unsigned shift;

  AK_DEVICE_INLINE int div(int n) const {
    const unsigned u = static_cast<unsigned>(n);
    return static_cast<int>((__umulhi(u, multiplier) + u) >> shift);
  }
  AK_DEVICE_INLINE void divmod(int n, int& quotient, int& remainder) const {
    quotient = div(n);
    remainder = n - quotient * divisor;
  }
};

inline FastDivmod make_fast_divmod(int divisor) {
  unsigned shift = 0;
  while ((int64_t{1} << shift) < divisor) ++shift;
  const uint64_t multiplier =
      ((uint64_t{1} << 32) * ((uint64_t{1} << shift) - static_cast<uint64_t>(divisor))) /
          static_cast<uint64_t>(divisor) +
      1;
  return {divisor, static_cast<unsigned>(multiplier), shift};
}

// Staging budget of one block of the NCHW kernels: 16 KiB keeps 8 blocks of
// 256 threads resident per SM on A100 and H100; the alignment slack is extra.
constexpr int kMaxPoolStageBytes = 16 * 1024;
constexpr int kStageAlign = 128;  // bytes: the staged copy starts at this boundary
// Blocks a staged NCHW launch keeps at least (about one per SM on A100 / H100) before
// it groups small planes: a larger group shares fewer partial sectors with its
// neighbours and spreads the block's fixed cost over more elements.
constexpr int64_t kMaxPoolMinBlocks = 128;
// channels_last: lanes over channels, 8 warps over columns, bands of rows.
constexpr int kNhwcLanes = 32;
constexpr int kNhwcWarps = kMaxPoolThreads / kNhwcLanes;
constexpr int kNhwcBandRows = 8;  // output rows (forward) per block; the halo costs 1 / 16
constexpr int kNhwcBandInputRows = 16;  // input rows (backward) per block

// Geometry of the staged and channels_last kernels, computed once on the host.
struct PoolShape {
  int64_t planes;  // NCHW: N * C planes; channels_last: N images
  int in_plane;    // elements of one input plane (image)
  int out_plane;
  int channels;    // C for channels_last, 1 for NCHW
  int in_h;
  int in_w;
  int out_h;
  int out_w;
  int tile_planes;  // NCHW: planes per block (1 when a plane is split into bands)
  int band_rows;    // rows per block: output rows (forward), input rows (backward)
  FastDivmod in_plane_div;
  FastDivmod in_w_div;
  FastDivmod out_plane_div;
  FastDivmod out_w_div;
  FastDivmod stride_h_div;
  FastDivmod stride_w_div;
  FastDivmod dilation_h_div;
  FastDivmod dilation_w_div;
};

inline PoolShape make_pool_shape(const PoolWindow& w, bool channels_last) {
  const PoolPlanes p = make_pool_planes(w, channels_last);
  PoolShape s{};
  s.planes = p.planes;
  s.in_plane = p.in_plane;
  s.out_plane = p.out_plane;
  s.channels = p.channels;
  s.in_h = p.in_h;
  s.in_w = p.in_w;
  s.out_h = p.out_h;
  s.out_w = p.out_w;
  s.tile_planes = 1;
  s.band_rows = 1;
  s.in_plane_div = make_fast_divmod(ak_max(p.in_plane, 1));
  s.in_w_div = make_fast_divmod(p.in_w);
  s.out_plane_div = make_fast_divmod(ak_max(p.out_plane, 1));
  s.out_w_div = make_fast_divmod(p.out_w);
  s.stride_h_div = make_fast_divmod(w.stride_h);
  s.stride_w_div = make_fast_divmod(w.stride_w);
  s.dilation_h_div = make_fast_divmod(w.dilation_h);
  s.dilation_w_div = make_fast_divmod(w.dilation_w);
  return s;
}

// Input rows [lo, hi) that the windows of output rows [oh_first, oh_last] touch.
struct RowRange {
  int lo;
  int hi;
};
AK_HOST_DEVICE inline RowRange input_rows_of(const Window2d& taps, int oh_first, int oh_last,
                                             int in_h) {
  return {ak_max(oh_first * taps.stride_h - taps.pad_h, 0),
          ak_min(oh_last * taps.stride_h - taps.pad_h + (taps.kernel_h - 1) * taps.dilation_h + 1,
                 in_h)};
}

// Output positions [first, last] along one axis whose windows contain input position i
// (covering_outputs in window.h without its divisions).
AK_DEVICE_INLINE CoveringOutputs<int> covering_fast(int i, int out_size, int kernel, int pad,
                                                    int dilation, const FastDivmod& stride) {
  const int lowest = i + pad - (kernel - 1) * dilation;
  const int first = lowest <= 0 ? 0 : stride.div(lowest + stride.divisor - 1);
  return {first, ak_min(stride.div(i + pad), out_size - 1)};
}

// Copies src[0, n) into shared memory so that src[i] lands at stage[lead + i], where
// lead is the number of elements between src and the kStageAlign-byte boundary below
// it. The whole 32-byte sectors of the range are loaded 16 bytes per lane, so each
// warp request covers whole, aligned sectors; the partial sectors at both ends (fewer
// than 32 bytes each) one element per lane, the head by the first warp and the tail
// by the second, one sector per request. Needs at least 64 threads. Returns lead.
template <typename T>
AK_DEVICE_INLINE int stage_range(T* stage, const T* src, int n) {
  static_assert(16 % sizeof(T) == 0, "elements must tile 16-byte vectors");
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int kSector = 32 / static_cast<int>(sizeof(T));
  const int lead =
      static_cast<int>((reinterpret_cast<uintptr_t>(src) % kStageAlign) / sizeof(T));
  const int end = lead + n;
  const int whole_lo = ak_min((lead + kSector - 1) / kSector * kSector, end);
  const int whole_hi = ak_max(end / kSector * kSector, whole_lo);
  for (int e = whole_lo + static_cast<int>(threadIdx.x) * kVec; e < whole_hi;
       e += blockDim.x * kVec) {
    ak_st(reinterpret_cast<uint4*>(stage + e),
          ak_ld(reinterpret_cast<const uint4*>(src + (e - lead))));
  }
  const int t = static_cast<int>(threadIdx.x);
  if (t < whole_lo - lead) {
    ak_st(stage + (lead + t), ak_ld(src + t));
  } else if (t >= 32 && t - 32 < end - whole_hi) {
    ak_st(stage + (whole_hi + t - 32), ak_ld(src + (whole_hi + t - 32 - lead)));
  }
  return lead;
}

// Shared-memory elements a staged copy of n elements may need (data plus lead).
template <typename T>
constexpr int64_t staged_elements(int64_t n) {
  return n + kStageAlign / static_cast<int64_t>(sizeof(T));
}

// The first tap k >= 0 whose position start + k * dilation is not negative
// (first_tap_inside in window.h without its division).
AK_DEVICE_INLINE int first_tap_fast(int start, const FastDivmod& dilation) {
  return start >= 0 ? 0 : dilation.div(-start + dilation.divisor - 1);
}

// Max and argmax of the window whose top-left input position is (ih0, iw0).
// kK > 0: a kK x kK window that the host found inside the input for every output
// (no padding, the last window ends in the input), so its taps are unrolled and
// unchecked; 0: the window's own size, taps outside the input acting as -inf. The
// argmax starts at the window's first position with non-negative coordinates, as
// in PyTorch, even when every value is -inf (or no tap lies inside the input).
template <int kK, typename Acc, typename Load>
AK_DEVICE_INLINE void window_max(const Window2d& taps, const PoolShape& s, int ih0, int iw0,
                                 const Load& load, Acc& best, int& best_tap) {
  const int kernel_h = kK > 0 ? kK : taps.kernel_h;
  const int kernel_w = kK > 0 ? kK : taps.kernel_w;
  best = -INFINITY;
  best_tap = kK > 0 ? 0
                    : first_tap_fast(ih0, s.dilation_h_div) * kernel_w +
                          first_tap_fast(iw0, s.dilation_w_div);
#pragma unroll
  for (int kh = 0; kh < kernel_h; ++kh) {
    const int ih = ih0 + kh * taps.dilation_h;
    if (kK == 0 && (ih < 0 || ih >= s.in_h)) continue;
#pragma unroll
    for (int kw = 0; kw < kernel_w; ++kw) {
      const int iw = iw0 + kw * taps.dilation_w;
      if (kK == 0 && (iw < 0 || iw >= s.in_w)) continue;
      const Acc v = load(ih, iw);
      // First maximum in window order wins ties; a NaN always takes over.
      if (v > best || v != v) {
        best = v;
        best_tap = kh * kernel_w + kw;
      }
    }
  }
}

// Whether every window of w lies inside the input (window_max's kK > 0 case).
inline bool pool_windows_inside(const PoolWindow& w) {
  const auto inside = [](int64_t out, int64_t in, int kernel, int stride, int pad, int dilation) {
    return pad == 0 && (out - 1) * stride + int64_t{kernel - 1} * dilation < in;
  };
  return inside(w.out_h, w.in_h, w.kernel_h, w.stride_h, w.pad_h, w.dilation_h) &&
         inside(w.out_w, w.in_w, w.kernel_w, w.stride_w, w.pad_w, w.dilation_w);
}

// NCHW forward. Block (blockIdx.x = band of band_rows output rows, blockIdx.y = group
// of tile_planes planes, grid-stride): stages the input rows of its windows, then
// computes its outputs from shared memory. Dynamic shared memory: the launcher's size.
template <typename T, typename A, int kK>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_forward_staged_kernel(const T* __restrict__ x, T* __restrict__ y,
                                   A* __restrict__ argmax, PoolShape s, Window2d taps) {
  using Acc = acc_t<T>;
  AK_DYNAMIC_SHARED(T, stage);
  const int oh0 = blockIdx.x * s.band_rows;
  const int rows = ak_min(s.band_rows, s.out_h - oh0);
  const RowRange in_rows = input_rows_of(taps, oh0, oh0 + rows - 1, s.in_h);
  for (int64_t plane0 = static_cast<int64_t>(blockIdx.y) * s.tile_planes; plane0 < s.planes;
       plane0 += static_cast<int64_t>(gridDim.y) * s.tile_planes) {
    const int planes = static_cast<int>(ak_min<int64_t>(s.tile_planes, s.planes - plane0));
    const int n_in = (planes - 1) * s.in_plane + (in_rows.hi - in_rows.lo) * s.in_w;
    const int lead = stage_range(
        stage, x + (plane0 * s.in_plane + static_cast<int64_t>(in_rows.lo) * s.in_w), n_in);
    __syncthreads();
    const int64_t first = plane0 * s.out_plane + static_cast<int64_t>(oh0) * s.out_w;
    const int n_out = (planes - 1) * s.out_plane + rows * s.out_w;
    T* y_tile = y + first;
    A* argmax_tile = argmax + first;
    // Thread j takes output j - skip, so warps start at 32-output boundaries.
    const int skip = static_cast<int>(first & 31);
    for (int j = threadIdx.x; j < n_out + skip; j += blockDim.x) {
      const int o = j - skip;
      if (o < 0) continue;
      int q, r, oh, ow;
      s.out_plane_div.divmod(o, q, r);
      s.out_w_div.divmod(r, oh, ow);
      oh += oh0;
      const int base = lead + q * s.in_plane - in_rows.lo * s.in_w;
      Acc best;
      int best_tap;
      window_max<kK, Acc>(
          taps, s, oh * taps.stride_h - taps.pad_h, ow * taps.stride_w - taps.pad_w,
          [stage, base, in_w = s.in_w](int ih, int iw) {
            return to_acc(ak_ld(stage + (base + ih * in_w + iw)));
          },
          best, best_tap);
      ak_st(y_tile + o, from_acc<T>(best));
      ak_st(argmax_tile + o, static_cast<A>(best_tap));
    }
    __syncthreads();  // the next group's staging overwrites this one
  }
}

// channels_last forward. Block (kNhwcLanes x kNhwcWarps threads): blockIdx.x = 32
// channels, blockIdx.y = band of band_rows output rows, blockIdx.z = image (grid-stride).
template <typename T, typename A, int kK>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_forward_nhwc_kernel(const T* __restrict__ x, T* __restrict__ y,
                                 A* __restrict__ argmax, PoolShape s, Window2d taps) {
  using Acc = acc_t<T>;
  const int c = blockIdx.x * kNhwcLanes + threadIdx.x;
  // Lanes past the last channel skip the loops instead of returning: with an early
  // return, nvcc (sm_80) kept c on the stack across the image loop (8 bytes).
  const bool active = c < s.channels;
  const int oh0 = blockIdx.y * s.band_rows;
  const int oh_end = ak_min(oh0 + s.band_rows, s.out_h);
  for (int64_t image = blockIdx.z; image < s.planes; image += gridDim.z) {
    const T* x_image = x + (image * s.in_plane + c);
    T* y_image = y + (image * s.out_plane + c);
    A* argmax_image = argmax + (image * s.out_plane + c);
    for (int oh = oh0; oh < oh_end; ++oh) {
      for (int ow = threadIdx.y; active && ow < s.out_w; ow += kNhwcWarps) {
        Acc best;
        int best_tap;
        window_max<kK, Acc>(
            taps, s, oh * taps.stride_h - taps.pad_h, ow * taps.stride_w - taps.pad_w,
            [x_image, in_w = s.in_w, channels = s.channels](int ih, int iw) {
              return to_acc(ak_ld(x_image + (ih * in_w + iw) * channels));
            },
            best, best_tap);
        const int o = (oh * s.out_w + ow) * s.channels;
        ak_st(y_image + o, from_acc<T>(best));
        ak_st(argmax_image + o, static_cast<A>(best_tap));
      }
    }
  }
}

// grad_x at input position (ih, iw): the sum of grad_y over the windows that cover it
// and whose argmax it is, in (oh, ow) order. at(oh, ow) gives the element offset of
// output (oh, ow) for grad_y(o) and argmax(o). kK > 0: kK x kK windows of stride kS,
// no dilation, every one inside the input (pool_windows_inside), so the at most
// ceil(kK / kS) covering outputs per axis are unrolled candidates; 0: any window.
template <int kK, int kS, typename Acc, typename At, typename GradY, typename Argmax>
AK_DEVICE_INLINE Acc gather_grad(const PoolShape& s, const Window2d& taps, int ih, int iw,
                                 const At& at, const GradY& grad_y, const Argmax& argmax) {
  Acc sum = 0;
  if constexpr (kK > 0) {
    constexpr int kCover = (kK + kS - 1) / kS;
    // The last output whose window starts at or before the input position.
    const int oh_last = ak_min(ih / kS, s.out_h - 1);
    const int ow_last = ak_min(iw / kS, s.out_w - 1);
#pragma unroll
    for (int jh = 0; jh < kCover; ++jh) {
      const int oh = oh_last - (kCover - 1) + jh;
      const int kh = ih - oh * kS;
#pragma unroll
      for (int jw = 0; jw < kCover; ++jw) {
        const int ow = ow_last - (kCover - 1) + jw;
        const int kw = iw - ow * kS;
        if (oh < 0 || kh >= kK || ow < 0 || kw >= kK) continue;
        const int o = at(oh, ow);
        const Acc g = to_acc(grad_y(o));
        if (static_cast<int>(argmax(o)) == kh * kK + kw) sum += g;
      }
    }
    return sum;
  }
  const CoveringOutputs<int> rows = covering_fast(ih, s.out_h, taps.kernel_h, taps.pad_h,
                                                  taps.dilation_h, s.stride_h_div);
  const CoveringOutputs<int> cols = covering_fast(iw, s.out_w, taps.kernel_w, taps.pad_w,
                                                  taps.dilation_w, s.stride_w_div);
  for (int oh = rows.first; oh <= rows.last; ++oh) {
    int kh, rest_h;
    s.dilation_h_div.divmod(ih + taps.pad_h - oh * taps.stride_h, kh, rest_h);
    if (rest_h != 0) continue;
    for (int ow = cols.first; ow <= cols.last; ++ow) {
      int kw, rest_w;
      s.dilation_w_div.divmod(iw + taps.pad_w - ow * taps.stride_w, kw, rest_w);
      if (rest_w != 0) continue;
      const int o = at(oh, ow);
      // grad_y is read whether it is taken or not: lanes then read it together
      // (whole sectors), not each at the windows its own argmax picks.
      const Acc g = to_acc(grad_y(o));
      if (static_cast<int>(argmax(o)) == kh * taps.kernel_w + kw) sum += g;
    }
  }
  return sum;
}

// NCHW backward. Block (blockIdx.x = band of band_rows input rows, blockIdx.y = group of
// tile_planes planes, grid-stride): stages grad_y and argmax of the output rows whose
// windows cover its input rows, then gathers every input element from shared memory.
template <typename T, typename A, int kK, int kS>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_backward_staged_kernel(const T* __restrict__ grad_y, const A* __restrict__ argmax,
                                    T* __restrict__ grad_x, PoolShape s, Window2d taps,
                                    int argmax_stage_offset) {
  using Acc = acc_t<T>;
  AK_DYNAMIC_SHARED(unsigned char, stage_bytes);
  T* g_stage = reinterpret_cast<T*>(stage_bytes);
  A* a_stage = reinterpret_cast<A*>(stage_bytes + argmax_stage_offset);
  const int ih0 = blockIdx.x * s.band_rows;
  const int rows = ak_min(s.band_rows, s.in_h - ih0);
  const int oh_lo = covering_fast(ih0, s.out_h, taps.kernel_h, taps.pad_h, taps.dilation_h,
                                  s.stride_h_div).first;
  const int oh_hi = ak_max(covering_fast(ih0 + rows - 1, s.out_h, taps.kernel_h, taps.pad_h,
                                         taps.dilation_h, s.stride_h_div).last,
                           oh_lo - 1);
  for (int64_t plane0 = static_cast<int64_t>(blockIdx.y) * s.tile_planes; plane0 < s.planes;
       plane0 += static_cast<int64_t>(gridDim.y) * s.tile_planes) {
    const int planes = static_cast<int>(ak_min<int64_t>(s.tile_planes, s.planes - plane0));
    const int n_out = (planes - 1) * s.out_plane + (oh_hi + 1 - oh_lo) * s.out_w;
    const int64_t out_first = plane0 * s.out_plane + static_cast<int64_t>(oh_lo) * s.out_w;
    const int g_lead = stage_range(g_stage, grad_y + out_first, n_out);
    const int a_lead = stage_range(a_stage, argmax + out_first, n_out);
    __syncthreads();
    const int64_t first = plane0 * s.in_plane + static_cast<int64_t>(ih0) * s.in_w;
    const int n_in = (planes - 1) * s.in_plane + rows * s.in_w;
    T* grad_x_tile = grad_x + first;
    const int skip = static_cast<int>(first & 31);  // as in the staged forward
    for (int j = threadIdx.x; j < n_in + skip; j += blockDim.x) {
      const int i = j - skip;
      if (i < 0) continue;
      int q, r, ih, iw;
      s.in_plane_div.divmod(i, q, r);
      s.in_w_div.divmod(r, ih, iw);
      ih += ih0;
      const int base = q * s.out_plane - oh_lo * s.out_w;
      const Acc sum = gather_grad<kK, kS, Acc>(
          s, taps, ih, iw, [base, out_w = s.out_w](int oh, int ow) { return base + oh * out_w + ow; },
          [g_stage, g_lead](int o) { return ak_ld(g_stage + (g_lead + o)); },
          [a_stage, a_lead](int o) { return ak_ld(a_stage + (a_lead + o)); });
      ak_st(grad_x_tile + i, from_acc<T>(sum));
    }
    __syncthreads();
  }
}

// channels_last backward. Block as the channels_last forward's, over bands of
// band_rows input rows, but blockIdx.x = image and blockIdx.z = 32 channels, with no
// loop over images: with that loop (and the gather's nested loops) nvcc kept values
// on the stack (4-8 bytes); the forward's loop compiles without.
template <typename T, typename A, int kK, int kS>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_backward_nhwc_kernel(const T* __restrict__ grad_y, const A* __restrict__ argmax,
                                  T* __restrict__ grad_x, PoolShape s, Window2d taps) {
  using Acc = acc_t<T>;
  const int c = blockIdx.z * kNhwcLanes + threadIdx.x;
  if (c >= s.channels) return;
  const int ih0 = blockIdx.y * s.band_rows;
  const int ih_end = ak_min(ih0 + s.band_rows, s.in_h);
  const int64_t image = blockIdx.x;
  const T* g_image = grad_y + (image * s.out_plane + c);
  const A* a_image = argmax + (image * s.out_plane + c);
  T* grad_x_image = grad_x + (image * s.in_plane + c);
  for (int ih = ih0; ih < ih_end; ++ih) {
    for (int iw = threadIdx.y; iw < s.in_w; iw += kNhwcWarps) {
      const Acc sum = gather_grad<kK, kS, Acc>(
          s, taps, ih, iw,
          [out_w = s.out_w, channels = s.channels](int oh, int ow) {
            return (oh * out_w + ow) * channels;
          },
          [g_image](int o) { return ak_ld(g_image + o); },
          [a_image](int o) { return ak_ld(a_image + o); });
      ak_st(grad_x_image + (ih * s.in_w + iw) * s.channels, from_acc<T>(sum));
    }
  }
}

// ---- generic kernels: NCHW planes whose rows are too wide to stage -----------------

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_forward_kernel(const T* __restrict__ x, T* __restrict__ y, A* __restrict__ argmax,
                            PoolPlanes planes, Window2d taps) {
  using Acc = acc_t<T>;
  for (int64_t plane = blockIdx.y; plane < planes.planes; plane += gridDim.y) {
    const T* x_plane = x + plane * planes.in_plane;
    const int step = static_cast<int>(gridDim.x * blockDim.x);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < planes.out_plane;
         i = grid_stride_next(i, step, planes.out_plane)) {
      // Element i of the output plane: pixel * channels + c (channels = 1 for NCHW).
      const int c = i % planes.channels;
      const int pixel = i / planes.channels;
      const int oh = pixel / planes.out_w;
      const int ow = pixel % planes.out_w;
      const int kh_first = first_tap_inside(oh, taps.stride_h, taps.pad_h, taps.dilation_h);
      const int kw_first = first_tap_inside(ow, taps.stride_w, taps.pad_w, taps.dilation_w);
      // Padding acts as -inf; the argmax starts at the window's first position
      // inside the input, as in PyTorch, even when every value is -inf.
      Acc best = -INFINITY;
      int best_tap = kh_first * taps.kernel_w + kw_first;
      for (int kh = kh_first; kh < taps.kernel_h; ++kh) {
        const int ih = taps.input_row(oh, kh);
        if (ih >= planes.in_h) break;
        for (int kw = kw_first; kw < taps.kernel_w; ++kw) {
          const int iw = taps.input_col(ow, kw);
          if (iw >= planes.in_w) break;
          const Acc v =
              to_acc(ak_ld(x_plane + ((ih * planes.in_w + iw) * planes.channels + c)));
          // First maximum in window order wins ties; a NaN always takes over.
          if (v > best || v != v) {
            best = v;
            best_tap = kh * taps.kernel_w + kw;
          }
        }
      }
      ak_st(y + (plane * planes.out_plane + i), from_acc<T>(best));
      ak_st(argmax + (plane * planes.out_plane + i), static_cast<A>(best_tap));
    }
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxPoolThreads)
    max_pool_backward_kernel(const T* __restrict__ grad_y, const A* __restrict__ argmax,
                             T* __restrict__ grad_x, PoolPlanes planes, Window2d taps) {
  using Acc = acc_t<T>;
  for (int64_t plane = blockIdx.y; plane < planes.planes; plane += gridDim.y) {
    const T* g_plane = grad_y + plane * planes.out_plane;
    const A* a_plane = argmax + plane * planes.out_plane;
    const int step = static_cast<int>(gridDim.x * blockDim.x);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < planes.in_plane;
         i = grid_stride_next(i, step, planes.in_plane)) {
      const int c = i % planes.channels;
      const int pixel = i / planes.channels;
      const int ih = pixel / planes.in_w;
      const int iw = pixel % planes.in_w;
      const CoveringOutputs<int> rows = covering_outputs(
          ih, planes.out_h, taps.kernel_h, taps.stride_h, taps.pad_h, taps.dilation_h);
      const CoveringOutputs<int> cols = covering_outputs(
          iw, planes.out_w, taps.kernel_w, taps.stride_w, taps.pad_w, taps.dilation_w);
      Acc sum = 0;
      for (int oh = rows.first; oh <= rows.last; ++oh) {
        const int dh = ih + taps.pad_h - oh * taps.stride_h;
        if (dh % taps.dilation_h != 0) continue;
        for (int ow = cols.first; ow <= cols.last; ++ow) {
          const int dw = iw + taps.pad_w - ow * taps.stride_w;
          if (dw % taps.dilation_w != 0) continue;
          const int o = (oh * planes.out_w + ow) * planes.channels + c;
          if (static_cast<int>(ak_ld(a_plane + o)) ==
              (dh / taps.dilation_h) * taps.kernel_w + dw / taps.dilation_w) {
            sum += to_acc(ak_ld(g_plane + o));
          }
        }
      }
      ak_st(grad_x + (plane * planes.in_plane + i), from_acc<T>(sum));
    }
  }
}

inline dim3 max_pool_grid(int64_t plane_elements, int64_t planes) {
  return dim3(static_cast<unsigned>(
                  ak_min(ceil_div<int64_t>(plane_elements, kMaxPoolThreads), kMaxPoolMaxTiles)),
              static_cast<unsigned>(ak_min(planes, kMaxPoolMaxPlanes)));
}

// Planes per block and rows per band of a staged NCHW launch whose block stages
// `bytes_per_plane` for a whole plane, or `bytes_per_row * span(rows)` for a band of
// `rows` rows. False when not even a one-row band fits the budget.
template <typename Span>
bool plan_staged(PoolShape& s, int64_t bytes_per_plane, int64_t bytes_per_row, int full_rows,
                 const Span& span) {
  if (bytes_per_plane <= kMaxPoolStageBytes) {
    // Several small planes per block, but not so many that the grid gets small.
    const int64_t fit = kMaxPoolStageBytes / ak_max<int64_t>(bytes_per_plane, 1);
    const int64_t spread = ak_max<int64_t>(s.planes / kMaxPoolMinBlocks, 1);
    s.tile_planes = static_cast<int>(ak_min(fit, spread));
    s.band_rows = full_rows;
    return true;
  }
  s.tile_planes = 1;
  int rows = full_rows;
  while (rows > 0 && bytes_per_row * span(rows) > kMaxPoolStageBytes) rows /= 2;
  s.band_rows = rows;
  return rows > 0;
}

inline dim3 staged_grid(const PoolShape& s, int full_rows) {
  return dim3(static_cast<unsigned>(ceil_div(full_rows, s.band_rows)),
              static_cast<unsigned>(
                  ak_min(ceil_div<int64_t>(s.planes, s.tile_planes), kMaxPoolMaxPlanes)));
}

inline dim3 nhwc_grid(const PoolShape& s, int full_rows) {
  return dim3(static_cast<unsigned>(ceil_div(s.channels, kNhwcLanes)),
              static_cast<unsigned>(ceil_div(full_rows, s.band_rows)),
              static_cast<unsigned>(ak_min(s.planes, kMaxPoolMaxPlanes)));
}

// The backward's: images on x (up to 2^31 - 1), channel groups on z.
inline dim3 nhwc_backward_grid(const PoolShape& s) {
  return dim3(static_cast<unsigned>(s.planes),
              static_cast<unsigned>(ceil_div(s.in_h, s.band_rows)),
              static_cast<unsigned>(ceil_div(s.channels, kNhwcLanes)));
}

template <typename T, typename A, int kK>
void launch_max_pool_forward_fast(const T* x, T* y, A* argmax, const PoolWindow& w,
                                  bool channels_last, cudaStream_t stream) {
  PoolShape s = make_pool_shape(w, channels_last);
  const Window2d taps = make_pool_taps(w);
  if (channels_last) {
    s.band_rows = kNhwcBandRows;
    auto kernel = &max_pool_forward_nhwc_kernel<T, A, kK>;
    AK_LAUNCH(kernel, nhwc_grid(s, s.out_h), dim3(kNhwcLanes, kNhwcWarps), 0, stream)(
        x, y, argmax, s, taps);
    return;
  }
  // Input rows the windows of a band of `rows` output rows touch, at most.
  const auto span = [&](int rows) {
    return ak_min<int64_t>(int64_t{rows - 1} * taps.stride_h +
                               int64_t{taps.kernel_h - 1} * taps.dilation_h + 1,
                           s.in_h);
  };
  const int64_t row_bytes = s.in_w * static_cast<int64_t>(sizeof(T));
  if (!plan_staged(s, s.in_plane * static_cast<int64_t>(sizeof(T)), row_bytes, s.out_h, span)) {
    const PoolPlanes planes = make_pool_planes(w, false);
    auto kernel = &max_pool_forward_kernel<T, A>;
    AK_LAUNCH(kernel, max_pool_grid(planes.out_plane, planes.planes), dim3(kMaxPoolThreads), 0,
              stream)(x, y, argmax, planes, taps);
    return;
  }
  const int64_t staged = s.tile_planes > 1 ? s.tile_planes * int64_t{s.in_plane}
                                           : span(s.band_rows) * s.in_w;
  auto kernel = &max_pool_forward_staged_kernel<T, A, kK>;
  AK_LAUNCH(kernel, staged_grid(s, s.out_h), dim3(kMaxPoolThreads),
            static_cast<size_t>(staged_elements<T>(staged) * sizeof(T)), stream)(
      x, y, argmax, s, taps);
}

// Requires a non-empty problem whose planes fit 32-bit indexing (pool_planes_fit_int32).
template <typename T, typename A>
void launch_max_pool_forward(const T* x, T* y, A* argmax, const PoolWindow& w, bool channels_last,
                             cudaStream_t stream) {
  if (w.kernel_h == 3 && w.kernel_w == 3 && pool_windows_inside(w)) {
    launch_max_pool_forward_fast<T, A, 3>(x, y, argmax, w, channels_last, stream);
  } else {
    launch_max_pool_forward_fast<T, A, 0>(x, y, argmax, w, channels_last, stream);
  }
}

template <typename T, typename A, int kK, int kS>
void launch_max_pool_backward_fast(const T* grad_y, const A* argmax, T* grad_x,
                                   const PoolWindow& w, bool channels_last, cudaStream_t stream) {
  PoolShape s = make_pool_shape(w, channels_last);
  const Window2d taps = make_pool_taps(w);
  if (channels_last) {
    s.band_rows = kNhwcBandInputRows;
    auto kernel = &max_pool_backward_nhwc_kernel<T, A, kK, kS>;
    AK_LAUNCH(kernel, nhwc_backward_grid(s), dim3(kNhwcLanes, kNhwcWarps), 0, stream)(
        grad_y, argmax, grad_x, s, taps);
    return;
  }
  // Output rows whose windows cover a band of `rows` input rows, at most.
  const auto span = [&](int rows) {
    const int64_t reach = (rows - 1) + int64_t{taps.kernel_h - 1} * taps.dilation_h;
    return ak_min<int64_t>(reach / taps.stride_h + 1, s.out_h);
  };
  const int64_t bytes = static_cast<int64_t>(sizeof(T) + sizeof(A));
  if (!plan_staged(s, s.out_plane * bytes, s.out_w * bytes, s.in_h, span)) {
    const PoolPlanes planes = make_pool_planes(w, false);
    auto kernel = &max_pool_backward_kernel<T, A>;
    AK_LAUNCH(kernel, max_pool_grid(planes.in_plane, planes.planes), dim3(kMaxPoolThreads), 0,
              stream)(grad_y, argmax, grad_x, planes, taps);
    return;
  }
  const int64_t staged = s.tile_planes > 1 ? s.tile_planes * int64_t{s.out_plane}
                                           : span(s.band_rows) * s.out_w;
  const int64_t g_bytes = ceil_div<int64_t>(staged_elements<T>(staged) * sizeof(T), 16) * 16;
  const int64_t a_bytes = staged_elements<A>(staged) * static_cast<int64_t>(sizeof(A));
  auto kernel = &max_pool_backward_staged_kernel<T, A, kK, kS>;
  AK_LAUNCH(kernel, staged_grid(s, s.in_h), dim3(kMaxPoolThreads),
            static_cast<size_t>(g_bytes + a_bytes), stream)(grad_y, argmax, grad_x, s, taps,
                                                            static_cast<int>(g_bytes));
}

template <typename T, typename A>
void launch_max_pool_backward(const T* grad_y, const A* argmax, T* grad_x, const PoolWindow& w,
                              bool channels_last, cudaStream_t stream) {
  // AlexNet's windows (3x3, stride 2, inside the input) take the unrolled gather.
  if (w.kernel_h == 3 && w.kernel_w == 3 && w.stride_h == 2 && w.stride_w == 2 &&
      w.dilation_h == 1 && w.dilation_w == 1 && pool_windows_inside(w)) {
    launch_max_pool_backward_fast<T, A, 3, 2>(grad_y, argmax, grad_x, w, channels_last, stream);
  } else {
    launch_max_pool_backward_fast<T, A, 0, 0>(grad_y, argmax, grad_x, w, channels_last, stream);
  }
}

}  // namespace alexnet_kernels::kernels
