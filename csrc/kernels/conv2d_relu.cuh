// Fused conv2d + bias + ReLU, forward and backward, as implicit-GEMM CUDA
// kernels (no PyTorch includes: the same source runs on the CPU in the tests).
//
// Every convolution product here is one GEMM C[m][n] = sum_k A[m][k] * B[n][k]
// whose operands are gathered straight from the activations (no im2col buffer):
//
//   forward   m = (image, oh, ow)  n = cout  k = (cin, kh, kw)   A = x     B = w
//   grad_x    m = (image, ih, iw)  n = cin   k = (cout, kh, kw)  A = g*    B = w
//   grad_w    m = cout             n = (cin, kh, kw)  k = (image, oh, ow)  A = g*  B = x
//
// with channels counted inside one group (groups are the grid's z axis) and
// g* = grad_y masked by the ReLU (zero where y <= 0) as it is read. k runs over
// the flattened (channel, kh, kw) index, so conv1 (3 channels, 11x11) fills whole K tiles.
// grad_x runs one GEMM per stride phase of the input pixels, over only the
// taps that reach them (see GradInputPhase).
//
// A block computes a kConvTileM x kConvTileN tile of C. Per K step each
// thread stages kConvRun consecutive k of one A row and one B row into
// shared memory (k contiguous in both tiles); then fp32/fp64 operands are
// multiplied with FFMA (4 x 8 outputs per thread) and fp16/bf16 ones with
// tensor cores (mma.m16n8k16, a 32 x 32 warp tile per warp; fp32 likewise
// with TF32 mma.m16n8k8 when PyTorch allows TF32), accumulating in fp32. The
// forward's weight rows are contiguous along k and read with 16-byte loads
// when aligned; the gathered operands (image patches, masked grad_y, weight
// columns) are read element by element, with zeros for padding and for
// positions outside the GEMM. The epilogue adds the bias and applies ReLU
// (forward), or stores the gradient. grad_w splits K over blocks into an fp32
// (fp64 for double) workspace and a second kernel sums the slices in fixed
// order: deterministic, no atomics. grad_b is a fixed-order block reduction
// per channel. One stage of shared tiles, no software pipelining.
//
// The forward for NHWC fp16 / bf16 with (C_in / groups) % 8 == 0 instead runs the
// pipelined conv2d_relu_forward_nhwc_kernel (K ordered (kh, kw, cin), cp.async into a
// 3-stage ring, ldmatrix, 128 x 128 tiles of 8 warps; see its section below).
//
// Indexing: an image of x or y (C x H x W elements) fits in 32 bits (the host
// checks it); image offsets and GEMM rows/depths that span images are 64-bit.
#pragma once

#include "common.cuh"
#include "mma.cuh"
#include "window.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace alexnet_kernels::kernels {

constexpr int kConvThreads = 128;
constexpr int kConvTileM = 64;
constexpr int kConvTileN = 64;
constexpr int kConvTileK = 32;
// Each thread stages half a row of each tile per K step.
constexpr int kConvRun = kConvTileK / 2;
static_assert(kConvTileM == kConvThreads / 2 && kConvTileN == kConvThreads / 2,
              "two threads stage each tile row");
constexpr int kConvReduceThreads = 256;
constexpr int kConvBiasThreads = 256;
constexpr int64_t kConvMaxGridX = 2147483647;
constexpr int64_t kConvMaxGridYZ = 65535;
// grad_w: split K until about this many blocks are in flight (a few waves of
// the largest GPUs), and never into slices shorter than a few K tiles.
constexpr int64_t kConvSplitTargetBlocks = 512;
constexpr int64_t kConvMinTilesPerSplit = 4;


struct ConvShape : Window2d {
  int64_t batch;
  int in_channels;
  int in_h;
  int in_w;
  int out_channels;
  int out_h;
  int out_w;
  int groups;
  bool channels_last;  // x, y, grad_y and grad_x are NHWC (else NCHW)

  AK_HOST_DEVICE int in_group() const { return in_channels / groups; }
  AK_HOST_DEVICE int out_group() const { return out_channels / groups; }
  // Forward GEMM depth = weight elements per output channel.
  AK_HOST_DEVICE int filter_size() const { return in_group() * taps(); }
  AK_HOST_DEVICE int64_t out_pixels() const { return static_cast<int64_t>(out_h) * out_w; }
};

// Offsets of (image, channel, row, column) in an activation tensor of either layout.
struct Activation {
  int channels;
  int height;
  int width;
  bool channels_last;

  AK_HOST_DEVICE int64_t image_size() const {
    return static_cast<int64_t>(channels) * height * width;
  }
  AK_DEVICE_INLINE int64_t offset(int64_t image, int c, int h, int w) const {
    const int inside = channels_last ? (h * width + w) * channels + c : (c * height + h) * width + w;
    return image * image_size() + inside;
  }
};

AK_HOST_DEVICE inline Activation input_activation(const ConvShape& s) {
  return {s.in_channels, s.in_h, s.in_w, s.channels_last};
}
AK_HOST_DEVICE inline Activation output_activation(const ConvShape& s) {
  return {s.out_channels, s.out_h, s.out_w, s.channels_last};
}

template <typename T>
AK_DEVICE_INLINE T zero_value() {
  return from_acc<T>(acc_t<T>(0));
}

// grad_y except where y <= 0: the ReLU backward, applied as grad_y is read. A NaN
// output passes its gradient, as PyTorch's ReLU backward (threshold_backward) does.
template <typename T>
AK_DEVICE_INLINE T masked_gradient(const T* grad_y, const T* y, int64_t at) {
  return to_acc(ak_ld(y + at)) <= acc_t<T>(0) ? zero_value<T>() : ak_ld(grad_y + at);
}

// (image, h, w) of a pixel index flattened over images of height x width;
// step() moves to the next index.
struct PixelCursor {
  int64_t image;
  int h;
  int w;

  AK_DEVICE_INLINE static PixelCursor at(int64_t index, int height, int width) {
    const int64_t pixels = static_cast<int64_t>(height) * width;
    PixelCursor p{};
    p.image = index / pixels;
    const int pixel = static_cast<int>(index - p.image * pixels);
    p.h = pixel / width;
    p.w = pixel - p.h * width;
    return p;
  }
  AK_DEVICE_INLINE void step(int height, int width) {
    if (++w == width) {
      w = 0;
      if (++h == height) {
        h = 0;
        ++image;
      }
    }
  }
};

// x at (image, c, ih, iw), zero in the padding.
template <typename T>
AK_DEVICE_INLINE T input_or_zero(const T* x, const ConvShape& s, int64_t image, int c, int ih,
                                 int iw) {
  if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) return zero_value<T>();
  return ak_ld(x + input_activation(s).offset(image, c, ih, iw));
}

// (channel, tap) of a GEMM depth index flattened over channels x kernel taps,
// tap = kh * kernel_w + kw; step() moves to the next index.
struct ChannelTap {
  int channel;
  int tap;

  AK_DEVICE_INLINE static ChannelTap at(int64_t index, int taps) {
    const int channel = static_cast<int>(index / taps);
    return {channel, static_cast<int>(index - static_cast<int64_t>(channel) * taps)};
  }
  AK_DEVICE_INLINE void step(int taps) {
    if (++tap == taps) {
      tap = 0;
      ++channel;
    }
  }
};

// ---- GEMM operands: run(row, k, k_end, out) = the kConvRun elements (row, k..k+kConvRun),
// zero past the operand's rows or past k_end --------------------------------------------------

// Forward A: x gathered for output pixel m = (image, oh, ow), k = (cin, kh, kw).
template <typename T>
struct InputPatches {
  const T* x;
  ConvShape s;
  int group;

  AK_DEVICE_INLINE void run(int64_t m, int64_t k, int64_t k_end, T (&out)[kConvRun]) const {
    const int64_t rows = s.batch * s.out_pixels();
    const PixelCursor pixel = PixelCursor::at(m, s.out_h, s.out_w);
    const int taps = s.taps();
    ChannelTap channel_tap = ChannelTap::at(k, taps);
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      T v = zero_value<T>();
      if (m < rows && k + i < k_end) {
        const int kh = channel_tap.tap / s.kernel_w;
        const int kw = channel_tap.tap - kh * s.kernel_w;
        v = input_or_zero(x, s, pixel.image, group * s.in_group() + channel_tap.channel,
                          s.input_row(pixel.h, kh), s.input_col(pixel.w, kw));
      }
      out[i] = v;
      channel_tap.step(taps);
    }
  }
};

// Forward B: row n of the weight (Cout, Cin / groups, KH, KW) is contiguous
// along k = (cin, kh, kw); read with 16-byte loads when rows are aligned.
template <typename T>
struct FilterRows {
  const T* w;
  ConvShape s;
  int group;
  bool aligned16;  // w is 16-byte aligned and filter_size() * sizeof(T) is a multiple of 16

  AK_DEVICE_INLINE void run(int64_t n, int64_t k, int64_t k_end, T (&out)[kConvRun]) const {
    if (n >= s.out_group()) {
#pragma unroll
      for (int i = 0; i < kConvRun; ++i) out[i] = zero_value<T>();
      return;
    }
    const T* row = w + (static_cast<int64_t>(group) * s.out_group() + n) * s.filter_size();
    if (aligned16 && k + kConvRun <= k_end) {
      constexpr int kPerVector = 16 / sizeof(T);
      static_assert(kConvRun % kPerVector == 0, "a run is whole 16-byte vectors");
#pragma unroll
      for (int v = 0; v < kConvRun / kPerVector; ++v) {
        const uint4 bits = ak_ld_as<uint4>(row + k + v * kPerVector);
        std::memcpy(&out[v * kPerVector], &bits, sizeof(bits));
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      out[i] = k + i < k_end ? ak_ld(row + k + i) : zero_value<T>();
    }
  }
};

// grad_x by stride phase. Along one axis (stride s, dilation d, padding p),
// output o reaches input i through kernel tap k when i + p = o * s + k * d,
// so input i only meets the taps with k * d == (i + p) (mod s). grad_x is one
// GEMM per phase, the pixels with the same ((ih + pad_h) mod stride_h,
// (iw + pad_w) mod stride_w), over only the taps that reach them: at conv1's
// stride 4, at most 9 of the 121 taps, where a plain implicit GEMM walks all
// 121 and masks 15 of 16 off. With g = gcd(d, s) a phase r has taps only when
// g divides r; they are k0, k0 + s / g, ..., and tap a of pixel t (the t-th
// input of the phase) belongs to output base + t - a * d / g: no division and
// no exactness test per element.
struct PhaseAxis {
  int first;     // first input index of the phase; the phase's inputs are first + t * stride
  int count;     // its inputs
  int tap0;      // its first tap
  int tap_step;  // s / g
  int taps;
  int out_base;  // output of input `first` through tap0
  int out_step;  // d / g: how far the output moves back per tap step
};

AK_HOST_DEVICE inline int gcd_int(int a, int b) {
  while (b != 0) {
    const int r = a % b;
    a = b;
    b = r;
  }
  return a;
}

AK_HOST_DEVICE inline PhaseAxis phase_axis(int phase, int size, int kernel, int stride,
                                           int pad, int dilation) {
  PhaseAxis axis{};
  axis.first = ((phase - pad) % stride + stride) % stride;  // (first + pad) % stride == phase
  axis.count = axis.first < size ? (size - axis.first + stride - 1) / stride : 0;
  const int g = gcd_int(dilation, stride);
  axis.tap_step = stride / g;
  axis.out_step = dilation / g;
  axis.tap0 = 0;
  while (axis.tap0 < axis.tap_step && (axis.tap0 * dilation - phase) % stride != 0) ++axis.tap0;
  axis.taps = axis.tap0 < axis.tap_step && axis.tap0 < kernel
                  ? (kernel - axis.tap0 + axis.tap_step - 1) / axis.tap_step
                  : 0;  // no tap when g does not divide the phase
  axis.out_base = (axis.first + pad - axis.tap0 * dilation) / stride;  // exact
  return axis;
}

struct GradInputPhase {
  PhaseAxis h;
  PhaseAxis w;

  AK_HOST_DEVICE int64_t pixels() const { return static_cast<int64_t>(h.count) * w.count; }
  AK_HOST_DEVICE int taps() const { return h.taps * w.taps; }
};

AK_HOST_DEVICE inline int grad_input_phase_count(const ConvShape& s) {
  return s.stride_h * s.stride_w;
}

AK_HOST_DEVICE inline GradInputPhase grad_input_phase(const ConvShape& s, int phase) {
  return {phase_axis(phase / s.stride_w, s.in_h, s.kernel_h, s.stride_h, s.pad_h, s.dilation_h),
          phase_axis(phase % s.stride_w, s.in_w, s.kernel_w, s.stride_w, s.pad_w, s.dilation_w)};
}

// (cout, a, b) of a grad_x GEMM depth index over a phase's taps, tap (a, b)
// being kernel position (tap0_h + a * tap_step_h, tap0_w + b * tap_step_w);
// step() moves to the next index without dividing.
struct PhaseTapCursor {
  int channel;
  int a;
  int b;

  AK_DEVICE_INLINE static PhaseTapCursor at(int64_t k, const GradInputPhase& p) {
    const ChannelTap ct = ChannelTap::at(k, p.taps());
    const int a = ct.tap / p.w.taps;
    return {ct.channel, a, ct.tap - a * p.w.taps};
  }
  AK_DEVICE_INLINE void step(const GradInputPhase& p) {
    if (++b == p.w.taps) {
      b = 0;
      if (++a == p.h.taps) {
        a = 0;
        ++channel;
      }
    }
  }
};

// grad_x A: masked grad_y gathered for the phase's input pixel m = (image, th, tw),
// k = (cout, a, b): the output pixel that tap (a, b) connects it to, if inside.
template <typename T>
struct OutputGradientTaps {
  const T* grad_y;
  const T* y;
  ConvShape s;
  GradInputPhase phase;
  int group;

  AK_DEVICE_INLINE void run(int64_t m, int64_t k, int64_t k_end, T (&out)[kConvRun]) const {
    const int64_t rows = s.batch * phase.pixels();
    const Activation output = output_activation(s);
    const PixelCursor in = PixelCursor::at(m, phase.h.count, phase.w.count);
    const int oh0 = phase.h.out_base + in.h;  // through tap a = 0
    const int ow0 = phase.w.out_base + in.w;
    PhaseTapCursor tap = PhaseTapCursor::at(k, phase);
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      T v = zero_value<T>();
      const int oh = oh0 - tap.a * phase.h.out_step;
      const int ow = ow0 - tap.b * phase.w.out_step;
      if (m < rows && k + i < k_end && oh >= 0 && oh < s.out_h && ow >= 0 && ow < s.out_w) {
        v = masked_gradient(grad_y, y,
                            output.offset(in.image, group * s.out_group() + tap.channel, oh, ow));
      }
      out[i] = v;
      tap.step(phase);
    }
  }
};

// grad_x B: weight element (cout, cin = n, kh, kw) for k = (cout, a, b).
template <typename T>
struct FilterColumns {
  const T* w;
  ConvShape s;
  GradInputPhase phase;
  int group;

  AK_DEVICE_INLINE void run(int64_t n, int64_t k, int64_t k_end, T (&out)[kConvRun]) const {
    PhaseTapCursor tap = PhaseTapCursor::at(k, phase);
    const T* filters = w + static_cast<int64_t>(group) * s.out_group() * s.filter_size() +
                       static_cast<int64_t>(n) * s.taps() + phase.h.tap0 * s.kernel_w +
                       phase.w.tap0;
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      T v = zero_value<T>();
      if (n < s.in_group() && k + i < k_end) {
        v = ak_ld(filters + (static_cast<int64_t>(tap.channel) * s.filter_size() +
                             tap.a * phase.h.tap_step * s.kernel_w + tap.b * phase.w.tap_step));
      }
      out[i] = v;
      tap.step(phase);
    }
  }
};

// (image, ih, iw) of the phase's input pixel m.
AK_DEVICE_INLINE PixelCursor phase_input_pixel(const GradInputPhase& p, const ConvShape& s,
                                               int64_t m) {
  PixelCursor at = PixelCursor::at(m, p.h.count, p.w.count);
  at.h = p.h.first + at.h * s.stride_h;
  at.w = p.w.first + at.w * s.stride_w;
  return at;
}

// grad_w A: masked grad_y of output channel m over k = (image, oh, ow).
template <typename T>
struct OutputGradientRows {
  const T* grad_y;
  const T* y;
  ConvShape s;
  int group;

  AK_DEVICE_INLINE void run(int64_t m, int64_t k, int64_t k_end, T (&out)[kConvRun]) const {
    const Activation output = output_activation(s);
    PixelCursor p = PixelCursor::at(k, s.out_h, s.out_w);
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      T v = zero_value<T>();
      if (m < s.out_group() && k + i < k_end) {
        const int64_t at =
            output.offset(p.image, group * s.out_group() + static_cast<int>(m), p.h, p.w);
        v = masked_gradient(grad_y, y, at);
      }
      out[i] = v;
      p.step(s.out_h, s.out_w);
    }
  }
};

// grad_w B: x under tap n = (cin, kh, kw) of output pixel k = (image, oh, ow).
template <typename T>
struct InputTapRows {
  const T* x;
  ConvShape s;
  int group;

  AK_DEVICE_INLINE void run(int64_t n, int64_t k, int64_t k_end, T (&out)[kConvRun]) const {
    const int taps = s.taps();
    const ChannelTap filter = ChannelTap::at(n, taps);
    const int kh = filter.tap / s.kernel_w;
    const int kw = filter.tap - kh * s.kernel_w;
    PixelCursor p = PixelCursor::at(k, s.out_h, s.out_w);
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      T v = zero_value<T>();
      if (n < s.filter_size() && k + i < k_end) {
        v = input_or_zero(x, s, p.image, group * s.in_group() + filter.channel,
                          s.input_row(p.h, kh), s.input_col(p.w, kw));
      }
      out[i] = v;
      p.step(s.out_h, s.out_w);
    }
  }
};

// ---- epilogues: store(m, n, value) for every C element inside the GEMM ---------------------

// y = relu(C + bias), in y's layout.
template <typename T>
struct BiasReluStore {
  T* y;
  const T* bias;  // nullptr without bias
  ConvShape s;
  int group;

  AK_DEVICE_INLINE void store(int64_t m, int n, acc_t<T> value) const {
    if (m >= s.batch * s.out_pixels() || n >= s.out_group()) return;
    const int co = group * s.out_group() + n;
    if (bias != nullptr) value += to_acc(ak_ld(bias + co));
    const PixelCursor out = PixelCursor::at(m, s.out_h, s.out_w);
    // `value < 0 ? 0 : value` keeps NaN, as torch.relu does.
    ak_st(y + output_activation(s).offset(out.image, co, out.h, out.w),
          from_acc<T>(value < acc_t<T>(0) ? acc_t<T>(0) : value));
  }
};

template <typename T>
struct InputGradientStore {
  T* grad_x;
  ConvShape s;
  GradInputPhase phase;
  int group;

  AK_DEVICE_INLINE void store(int64_t m, int n, acc_t<T> value) const {
    if (m >= s.batch * phase.pixels() || n >= s.in_group()) return;
    const PixelCursor in = phase_input_pixel(phase, s, m);
    ak_st(grad_x + input_activation(s).offset(in.image, group * s.in_group() + n, in.h, in.w),
          from_acc<T>(value));
  }
};

// One K slice's partial weight gradient: workspace[slice][cout][cin / groups * KH * KW].
template <typename T>
struct WeightSliceStore {
  acc_t<T>* workspace;
  ConvShape s;
  int group;
  int slice;

  AK_DEVICE_INLINE void store(int64_t m, int n, acc_t<T> value) const {
    if (m >= s.out_group() || n >= s.filter_size()) return;
    const int64_t co = static_cast<int64_t>(group) * s.out_group() + m;
    ak_st(workspace + (static_cast<int64_t>(slice) * s.out_channels + co) * s.filter_size() + n,
          value);
  }
};

// ---- block tile accumulators ---------------------------------------------------------------
// Each multiplies a block's shared A and B tiles (k contiguous in both) into
// its C registers. kPad is its tiles' row padding in elements, chosen so that
// its own reads of the tiles hit distinct banks; stage(v) is what the tile
// holds for operand value v.

template <typename T, int kPad>
using PaddedTile = T[kConvTileM][kConvTileK + kPad];

// FFMA: thread (tm, tn) owns rows tm + 16 i and columns tn + 8 j, so a warp
// reads 16 distinct A rows (a 33-element row stride puts them in distinct
// banks) and 2 B rows (broadcast), and neighbouring threads store neighbouring m.
template <typename T>
struct FfmaAccumulator {
  static constexpr int kPad = 1;
  using Tile = PaddedTile<T, kPad>;
  static constexpr int kRows = 4;
  static constexpr int kCols = 8;
  static_assert(kRows * 16 == kConvTileM && kCols * 8 == kConvTileN, "16 x 8 threads");
  acc_t<T> c[kRows][kCols];

  AK_DEVICE_INLINE void zero() {
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) c[i][j] = acc_t<T>(0);
    }
  }

  AK_DEVICE_INLINE static T stage(T v) { return v; }

  AK_DEVICE_INLINE void multiply(const Tile& a, const Tile& b) {
    const int tm = threadIdx.x % 16;
    const int tn = threadIdx.x / 16;
#pragma unroll 4
    for (int kk = 0; kk < kConvTileK; ++kk) {
      acc_t<T> av[kRows];
      acc_t<T> bv[kCols];
#pragma unroll
      for (int i = 0; i < kRows; ++i) av[i] = to_acc(ak_ld(&a[tm + 16 * i][kk]));
#pragma unroll
      for (int j = 0; j < kCols; ++j) bv[j] = to_acc(ak_ld(&b[tn + 8 * j][kk]));
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
#pragma unroll
        for (int j = 0; j < kCols; ++j) c[i][j] += av[i] * bv[j];
      }
    }
  }

  template <class Epilogue>
  AK_DEVICE_INLINE void store(const Epilogue& epilogue, int64_t m0, int n0) const {
    const int tm = threadIdx.x % 16;
    const int tn = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) epilogue.store(m0 + tm + 16 * i, n0 + tn + 8 * j, c[i][j]);
    }
  }
};

// The tensor-core steps a warp tile is built from (layouts in mma.cuh).
// fp16 / bf16: mma.m16n8k16, two 16-bit elements per register. A 16-bit tile
// row of 32 + 8 elements is 80 bytes: the 8 rows a fragment load touches start
// 20 banks apart (mod 32), so its 32 lanes hit distinct banks, and rows stay
// 16-byte aligned.
template <typename T>
struct HalfMmaStep {
  static constexpr int kK = 16;
  static constexpr int kPad = 8;
  AK_DEVICE_INLINE static T stage(T v) { return v; }
  // Registers of the fragment rows/columns starting at `row`, steps k0..k0+16.
  AK_DEVICE_INLINE static void load_a(uint32_t (&f)[4], const T (*tile)[kConvTileK + kPad],
                                      int row, int k0, int t) {
    f[0] = ak_ld_as<uint32_t>(&tile[row][k0 + 2 * t]);
    f[1] = ak_ld_as<uint32_t>(&tile[row + 8][k0 + 2 * t]);
    f[2] = ak_ld_as<uint32_t>(&tile[row][k0 + 2 * t + 8]);
    f[3] = ak_ld_as<uint32_t>(&tile[row + 8][k0 + 2 * t + 8]);
  }
  AK_DEVICE_INLINE static void load_b(uint32_t (&f)[2], const T (*tile)[kConvTileK + kPad],
                                      int col, int k0, int t) {
    f[0] = ak_ld_as<uint32_t>(&tile[col][k0 + 2 * t]);
    f[1] = ak_ld_as<uint32_t>(&tile[col][k0 + 2 * t + 8]);
  }
  AK_DEVICE_INLINE static void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ak_mma_m16n8k16<T>(c, a, b);
  }
};

// fp32 on TF32 tensor cores: mma.m16n8k8, one element per register, operands
// rounded to TF32 once, as they are staged. A fragment load reads rows g and
// columns t (g < 8, t < 4): a 36-float row stride puts lane (g, t) in bank
// 4 g + t, all distinct.
struct Tf32MmaStep {
  static constexpr int kK = 8;
  static constexpr int kPad = 4;
  AK_DEVICE_INLINE static float stage(float v) { return to_tf32(v); }
  AK_DEVICE_INLINE static void load_a(uint32_t (&f)[4], const float (*tile)[kConvTileK + kPad],
                                      int row, int k0, int t) {
    f[0] = float_bits(ak_ld(&tile[row][k0 + t]));
    f[1] = float_bits(ak_ld(&tile[row + 8][k0 + t]));
    f[2] = float_bits(ak_ld(&tile[row][k0 + t + 4]));
    f[3] = float_bits(ak_ld(&tile[row + 8][k0 + t + 4]));
  }
  AK_DEVICE_INLINE static void load_b(uint32_t (&f)[2], const float (*tile)[kConvTileK + kPad],
                                      int col, int k0, int t) {
    f[0] = float_bits(ak_ld(&tile[col][k0 + t]));
    f[1] = float_bits(ak_ld(&tile[col][k0 + t + 4]));
  }
  AK_DEVICE_INLINE static void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ak_mma_m16n8k8_tf32(c, a, b);
  }
};

// Tensor cores: the four warps split the 64 x 64 tile 2 x 2, each warp a
// 32 x 32 tile of 2 x 4 m16n8 blocks of `Step`.
template <typename T, class Step>
struct MmaAccumulator {
  static constexpr int kPad = Step::kPad;
  using Tile = PaddedTile<T, kPad>;
  static constexpr int kWarpRows = 2;  // m16 blocks per warp
  static constexpr int kWarpCols = 4;  // n8 blocks per warp
  static_assert(kConvThreads == 128 && kConvTileM == 64 && kConvTileN == 64,
                "four warps of 32 x 32");
  static_assert(kConvTileK % Step::kK == 0, "whole mma steps per K tile");
  float c[kWarpRows][kWarpCols][4];

  AK_DEVICE_INLINE void zero() {
#pragma unroll
    for (int i = 0; i < kWarpRows; ++i) {
#pragma unroll
      for (int j = 0; j < kWarpCols; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) c[i][j][e] = 0.0f;
      }
    }
  }

  AK_DEVICE_INLINE static int warp_row0() { return (threadIdx.x / 32) % 2 * 32; }
  AK_DEVICE_INLINE static int warp_col0() { return (threadIdx.x / 32) / 2 * 32; }
  AK_DEVICE_INLINE static T stage(T v) { return Step::stage(v); }

  AK_DEVICE_INLINE void multiply(const Tile& a, const Tile& b) {
    const int g = (threadIdx.x % 32) / 4;
    const int t = threadIdx.x % 4;
#pragma unroll
    for (int kk = 0; kk < kConvTileK; kk += Step::kK) {
      uint32_t af[kWarpRows][4];
      uint32_t bf[kWarpCols][2];
#pragma unroll
      for (int i = 0; i < kWarpRows; ++i) Step::load_a(af[i], a, warp_row0() + 16 * i + g, kk, t);
#pragma unroll
      for (int j = 0; j < kWarpCols; ++j) Step::load_b(bf[j], b, warp_col0() + 8 * j + g, kk, t);
#pragma unroll
      for (int i = 0; i < kWarpRows; ++i) {
#pragma unroll
        for (int j = 0; j < kWarpCols; ++j) Step::mma(c[i][j], af[i], bf[j]);
      }
    }
  }

  template <class Epilogue>
  AK_DEVICE_INLINE void store(const Epilogue& epilogue, int64_t m0, int n0) const {
    const int g = (threadIdx.x % 32) / 4;
    const int t = threadIdx.x % 4;
#pragma unroll
    for (int i = 0; i < kWarpRows; ++i) {
#pragma unroll
      for (int j = 0; j < kWarpCols; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          epilogue.store(m0 + warp_row0() + 16 * i + g + (e >= 2 ? 8 : 0),
                         n0 + warp_col0() + 8 * j + 2 * t + (e & 1), c[i][j][e]);
        }
      }
    }
  }
};

// How a block multiplies: tensor cores for fp16 / bf16 always and for fp32
// when kTf32 (TF32 allowed, sm_80+), FFMA otherwise (and for fp64).
template <typename T, bool kTf32>
struct ConvMath {
  using type = FfmaAccumulator<T>;
};
template <>
struct ConvMath<__half, false> {
  using type = MmaAccumulator<__half, HalfMmaStep<__half>>;
};
template <>
struct ConvMath<__nv_bfloat16, false> {
  using type = MmaAccumulator<__nv_bfloat16, HalfMmaStep<__nv_bfloat16>>;
};
template <>
struct ConvMath<float, true> {
  using type = MmaAccumulator<float, Tf32MmaStep>;
};
template <typename T, bool kTf32>
using ConvAccumulator = typename ConvMath<T, kTf32>::type;

// C[m0.., n0..] over k in [k_begin, k_end) for one block, handed to `epilogue`.
template <typename T, bool kTf32, class OperandA, class OperandB, class Epilogue>
AK_DEVICE_INLINE void implicit_gemm_tile(const OperandA& a, const OperandB& b,
                                         const Epilogue& epilogue, int64_t m0, int n0,
                                         int64_t k_begin, int64_t k_end) {
  using Accumulator = ConvAccumulator<T, kTf32>;
  AK_SHARED_ARRAY(T, a_tile, [kConvTileM][kConvTileK + Accumulator::kPad]);
  AK_SHARED_ARRAY(T, b_tile, [kConvTileN][kConvTileK + Accumulator::kPad]);
  const int row = threadIdx.x / 2;
  const int k_offset = (threadIdx.x % 2) * kConvRun;
  Accumulator acc;
  acc.zero();
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kConvTileK) {
    T staged[kConvRun];
    a.run(m0 + row, k0 + k_offset, k_end, staged);
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      ak_st(&a_tile[row][k_offset + i], Accumulator::stage(staged[i]));
    }
    b.run(n0 + row, k0 + k_offset, k_end, staged);
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      ak_st(&b_tile[row][k_offset + i], Accumulator::stage(staged[i]));
    }
    __syncthreads();
    acc.multiply(a_tile, b_tile);
    __syncthreads();  // the next step overwrites the tiles
  }
  acc.store(epilogue, m0, n0);
}

// ---- kernels --------------------------------------------------------------------------------

template <typename T>
struct ConvForwardArgs {
  const T* x;
  const T* w;
  const T* bias;
  T* y;
  ConvShape s;
  bool w_aligned16;
};

// grid (M tiles, Cout / groups tiles, groups)
template <typename T, bool kTf32>
__global__ void __launch_bounds__(kConvThreads) conv2d_relu_forward_kernel(ConvForwardArgs<T> a) {
  const int group = static_cast<int>(blockIdx.z);
  implicit_gemm_tile<T, kTf32>(InputPatches<T>{a.x, a.s, group},
                        FilterRows<T>{a.w, a.s, group, a.w_aligned16},
                        BiasReluStore<T>{a.y, a.bias, a.s, group},
                        static_cast<int64_t>(blockIdx.x) * kConvTileM,
                        static_cast<int>(blockIdx.y) * kConvTileN, 0, a.s.filter_size());
}

template <typename T>
struct ConvBackwardArgs {
  const T* grad_y;
  const T* x;
  const T* w;
  const T* y;
  T* grad_x;
  acc_t<T>* grad_w_slices;
  ConvShape s;
  int64_t slice_depth;  // grad_w: K per slice, a multiple of kConvTileK
};

// grid (tiles of N * the largest phase's pixels, Cin / groups tiles, groups * phases)
template <typename T, bool kTf32>
__global__ void __launch_bounds__(kConvThreads)
    conv2d_relu_grad_input_kernel(ConvBackwardArgs<T> a) {
  const int group = static_cast<int>(blockIdx.z) % a.s.groups;
  const GradInputPhase phase =
      grad_input_phase(a.s, static_cast<int>(blockIdx.z) / a.s.groups);
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kConvTileM;
  if (m0 >= a.s.batch * phase.pixels()) return;  // the whole block: smaller phases
  implicit_gemm_tile<T, kTf32>(OutputGradientTaps<T>{a.grad_y, a.y, a.s, phase, group},
                               FilterColumns<T>{a.w, a.s, phase, group},
                               InputGradientStore<T>{a.grad_x, a.s, phase, group}, m0,
                               static_cast<int>(blockIdx.y) * kConvTileN, 0,
                               static_cast<int64_t>(a.s.out_group()) * phase.taps());
}

// grid (Cout / groups tiles, filter_size tiles, groups * slices)
template <typename T, bool kTf32>
__global__ void __launch_bounds__(kConvThreads)
    conv2d_relu_grad_weight_kernel(ConvBackwardArgs<T> a) {
  const int group = static_cast<int>(blockIdx.z) % a.s.groups;
  const int slice = static_cast<int>(blockIdx.z) / a.s.groups;
  const int64_t depth = a.s.batch * a.s.out_pixels();
  const int64_t k_begin = slice * a.slice_depth;
  const int64_t k_end = ak_min<int64_t>(depth, k_begin + a.slice_depth);
  implicit_gemm_tile<T, kTf32>(OutputGradientRows<T>{a.grad_y, a.y, a.s, group},
                        InputTapRows<T>{a.x, a.s, group},
                        WeightSliceStore<T>{a.grad_w_slices, a.s, group, slice},
                        static_cast<int64_t>(blockIdx.x) * kConvTileM,
                        static_cast<int>(blockIdx.y) * kConvTileN, k_begin, k_end);
}

// grad_w[i] = sum of the slices' partials in slice order (deterministic).
template <typename T>
__global__ void __launch_bounds__(kConvReduceThreads)
    conv2d_relu_grad_weight_reduce_kernel(const acc_t<T>* __restrict__ slices, int slice_count,
                                          int64_t weight_numel, T* __restrict__ grad_w) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < weight_numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc_t<T> sum = 0;
    for (int s = 0; s < slice_count; ++s) sum += ak_ld(slices + (s * weight_numel + i));
    ak_st(grad_w + i, from_acc<T>(sum));
  }
}

// grad_b[c] = sum over images and pixels of masked grad_y: one block per
// channel, a fixed per-thread order and a fixed tree (deterministic).
template <typename T>
__global__ void __launch_bounds__(kConvBiasThreads)
    conv2d_relu_grad_bias_kernel(const T* __restrict__ grad_y, const T* __restrict__ y,
                                 ConvShape s, T* __restrict__ grad_b) {
  using Acc = acc_t<T>;
  AK_SHARED_ARRAY(Acc, partial, [kConvBiasThreads]);
  const int c = static_cast<int>(blockIdx.x);
  const Activation output = output_activation(s);
  const int64_t pixels = s.out_pixels();
  Acc sum = 0;
  for (int64_t i = threadIdx.x; i < s.batch * pixels; i += kConvBiasThreads) {
    const int64_t image = i / pixels;
    const int pixel = static_cast<int>(i - image * pixels);
    const int oh = pixel / s.out_w;
    sum += to_acc(masked_gradient(grad_y, y, output.offset(image, c, oh, pixel - oh * s.out_w)));
  }
  ak_st(&partial[threadIdx.x], sum);
  __syncthreads();
  for (int half = kConvBiasThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) {
      const Acc sum_of_pair = ak_ld(&partial[threadIdx.x]) + ak_ld(&partial[threadIdx.x + half]);
      ak_st(&partial[threadIdx.x], sum_of_pair);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) ak_st(grad_b + c, from_acc<T>(ak_ld(&partial[0])));
}

// ---- forward, pipelined: NHWC fp16 / bf16 with (C_in / groups) % 8 == 0 ----------------------
//
// The same GEMM as conv2d_relu_forward_kernel with K ordered (kh, kw, cin) instead,
// channels innermost, so that 8 consecutive k are 8 consecutive channels of one
// pixel in NHWC x, and 8 consecutive elements of one row of the OHWI weight: each
// operand moves in 16-byte cp.async copies (zero-fill for padding and for k past K),
// straight into a kFpropStages-deep ring of shared tiles, one barrier per K step. A
// thread's copies are always the same chunk column of the same rows, so its
// operand iterators are set up once (one division per row, for the pixel) and then
// only add: FilterPosition walks (kh, kw, cin) of its chunk by whole K tiles.
// Tiles are 128 x 32 elements, rows of four 16-byte chunks stored XOR-swizzled
// (fprop_tile_offset), so both the cp.async stores (8 lanes: 2 rows x 4 chunks)
// and the ldmatrix reads (8 rows of one chunk) hit all 32 banks once. 8 warps,
// 2 x 4 over the 128 x 128 block tile, each 64 x 32 = 4 x 4 mma.m16n8k16 per k16
// step from 4 + 2 ldmatrix.x4. The epilogue adds the bias and applies ReLU
// (`v < 0 ? 0 : v`, which keeps NaN), stages the tile in shared memory and stores it
// in 16-byte chunks of 8 channels.

constexpr int kFpropThreads = 256;
constexpr int kFpropTileM = 128;
constexpr int kFpropTileN = 128;
constexpr int kFpropTileK = 32;
constexpr int kFpropStages = 3;
constexpr int kFpropChunk = 8;  // 16-bit elements per 16-byte copy
constexpr int kFpropChunksPerRow = kFpropTileK / kFpropChunk;
constexpr int kFpropRowsPerPass = kFpropThreads / kFpropChunksPerRow;
constexpr int kFpropPasses = kFpropTileM / kFpropRowsPerPass;  // rows per thread and operand
constexpr int kFpropStageElements = kFpropTileM * kFpropTileK;
constexpr int kFpropSmemBytes = 2 * kFpropStages * kFpropStageElements * 2;  // A and B rings
static_assert(kFpropTileM == kFpropTileN, "A and B tiles share the load mapping");
static_assert(kFpropChunksPerRow == 4, "the swizzle below is for rows of four chunks");
// The epilogue's staged output tile reuses the ring; its rows are padded by one 16-byte
// chunk, so the accumulators' 4-byte stores (8 rows x 4 pairs per warp) hit 32 banks.
constexpr int kFpropEpilogueStride = kFpropTileN + kFpropChunk;
static_assert(kFpropTileM * kFpropEpilogueStride * 2 <= kFpropSmemBytes, "fits in the ring");
// 48 KiB: two blocks per SM (sm_80: 164 KiB, sm_90: 228 KiB); the CUDA launcher opts in
// to it (the default limit is 48 KiB minus the image's static shared memory).
static_assert(kFpropSmemBytes <= 48 * 1024, "two blocks per SM on sm_80 and sm_90");

// Element offset of 16-byte chunk `chunk` of tile row `row`. Rows are 64 bytes, so
// rows 2i and 2i + 1 share one 128-byte bank line; XOR-ing the chunk with
// (row / 2) % 4 puts the same chunk of 8 consecutive rows in 8 distinct 16-byte
// bank groups.
AK_HOST_DEVICE inline int fprop_tile_offset(int row, int chunk) {
  return row * kFpropTileK + (chunk ^ ((row >> 1) & 3)) * kFpropChunk;
}

// Whether the forward runs the pipelined kernel: 16-bit tensor-core types, NHWC,
// whole 16-byte channel vectors per group, kernels of at most 32 x 32 (the masks of
// FpropLoader), and 16-byte aligned x and weight (the host checks the pointers).
AK_HOST_DEVICE inline bool conv_forward_is_pipelined(const ConvShape& s, bool half_type) {
  return half_type && s.channels_last && s.in_group() % kFpropChunk == 0 && s.kernel_h <= 32 &&
         s.kernel_w <= 32;
}

// (kh, kw, cin) of one thread's chunk, k = (kh * KW + kw) * (C_in / groups) + cin;
// kh == KH once k has passed the filter. advance() moves k on by adding, without
// dividing, and returns how far the chunk moved in an NHWC image: the same for the
// window of every output pixel.
struct FilterPosition {
  int channel;
  int kh;
  int kw;

  AK_DEVICE_INLINE int advance(int step, const ConvShape& s) {
    int moved = step;
    channel += step;
    while (channel >= s.in_group()) {  // more than once only for C_in / groups < kFpropTileK
      channel -= s.in_group();
      moved += s.dilation_w * s.in_channels - s.in_group();  // next kw, channel 0
      if (++kw == s.kernel_w) {
        kw = 0;
        ++kh;
        moved += (s.dilation_h * s.in_w - s.kernel_w * s.dilation_w) * s.in_channels;
      }
    }
    return moved;
  }
};

// Bit t set where filter tap t along one axis of a window starting at input index
// `first` lies inside the input (taps <= 32, as the pipelined kernel requires).
AK_DEVICE_INLINE uint32_t inside_taps(int first, int taps, int dilation, int size) {
  uint32_t mask = 0;
  for (int t = 0; t < taps; ++t) {
    const int at = first + t * dilation;
    if (at >= 0 && at < size) mask |= 1u << t;
  }
  return mask;
}

// The cp.async copies of one thread: chunk `chunk` of rows row0 + i * kFpropRowsPerPass
// of the A (x patches) and B (weight rows) tiles, with the CUTLASS "optimized"
// iterators' precomputation: a pointer per row that every K tile moves by the same
// amount, and per row the masks of the filter rows and columns inside the input.
template <typename T>
struct FpropLoader {
  const T* patch[kFpropPasses];    // this chunk of x under the window (may lie outside)
  uint32_t rows_inside[kFpropPasses];  // inside_taps along H; 0 past M
  uint32_t cols_inside[kFpropPasses];  // ... along W
  const T* filter[kFpropPasses];   // this chunk of the weight row
  bool filter_inside[kFpropPasses];  // the row is an output channel (not past N)
  int store_offset[kFpropPasses];  // in a stage tile
  FilterPosition at;

  AK_DEVICE_INLINE void init(const ConvForwardArgs<T>& a, int group, int64_t m0, int n0) {
    const ConvShape& s = a.s;
    const int64_t rows = s.batch * s.out_pixels();
    const int chunk = static_cast<int>(threadIdx.x) % kFpropChunksPerRow;
    const int row0 = static_cast<int>(threadIdx.x) / kFpropChunksPerRow;
    at = {0, 0, 0};
    const int start = at.advance(chunk * kFpropChunk, s);
#pragma unroll
    for (int i = 0; i < kFpropPasses; ++i) {
      const int row = row0 + i * kFpropRowsPerPass;
      const int64_t m = m0 + row;
      const PixelCursor p = PixelCursor::at(m < rows ? m : 0, s.out_h, s.out_w);
      const int ih0 = p.h * s.stride_h - s.pad_h;
      const int iw0 = p.w * s.stride_w - s.pad_w;
      // Points before the image in the padding: only copies inside the input read it.
      patch[i] = a.x + p.image * input_activation(s).image_size() + group * s.in_group() +
                 (static_cast<int64_t>(ih0) * s.in_w + iw0) * s.in_channels + start;
      rows_inside[i] = m < rows ? inside_taps(ih0, s.kernel_h, s.dilation_h, s.in_h) : 0u;
      cols_inside[i] = inside_taps(iw0, s.kernel_w, s.dilation_w, s.in_w);
      const int n = n0 + row;
      filter_inside[i] = n < s.out_group();
      filter[i] = a.w + (static_cast<int64_t>(group) * s.out_group() + (filter_inside[i] ? n : 0)) *
                            s.filter_size() + chunk * kFpropChunk;
      store_offset[i] = fprop_tile_offset(row, chunk);
    }
  }

  // Issues the copies of the next K tile into ring stage `stage` (an element offset).
  AK_DEVICE_INLINE void load(T* a_ring, T* b_ring, int stage, const ConvShape& s) {
    const bool k_inside = at.kh < s.kernel_h;  // rows_inside has no bit kh == KH
#pragma unroll
    for (int i = 0; i < kFpropPasses; ++i) {
      const bool a_inside = ((rows_inside[i] >> at.kh) & (cols_inside[i] >> at.kw) & 1u) != 0;
      ak_cp_async<16>(a_ring + (stage + store_offset[i]), patch[i], a_inside ? 16 : 0);
      ak_cp_async<16>(b_ring + (stage + store_offset[i]), filter[i],
                      filter_inside[i] && k_inside ? 16 : 0);
      filter[i] += kFpropTileK;
    }
    const int moved = at.advance(kFpropTileK, s);
#pragma unroll
    for (int i = 0; i < kFpropPasses; ++i) patch[i] += moved;
  }
};

// Two 16-bit outputs side by side, stored as one 32-bit word.
template <typename T>
struct alignas(4) OutputPair {
  T lo;
  T hi;
};

// grid (M tiles, C_out / groups tiles, groups); kFpropSmemBytes of dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kFpropThreads)
    conv2d_relu_forward_nhwc_kernel(ConvForwardArgs<T> a) {
  static_assert(kIsHalfType<T>, "fp16 / bf16 on mma.m16n8k16");
  AK_DYNAMIC_SHARED(T, smem);
  T* const a_ring = smem;
  T* const b_ring = smem + kFpropStages * kFpropStageElements;
  const ConvShape& s = a.s;
  const int group = static_cast<int>(blockIdx.z);
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kFpropTileM;
  const int n0 = static_cast<int>(blockIdx.y) * kFpropTileN;
  const int k_tiles = ceil_div(s.filter_size(), kFpropTileK);
  FpropLoader<T> loader;
  loader.init(a, group, m0, n0);
  // Prologue: the first kFpropStages - 1 tiles in flight, one commit group each
  // (empty past the last tile, so that the group count stays in step).
#pragma unroll
  for (int stage = 0; stage < kFpropStages - 1; ++stage) {
    if (stage < k_tiles) loader.load(a_ring, b_ring, stage * kFpropStageElements, s);
    ak_cp_async_commit();
  }
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int warp_m0 = (warp % 2) * 64;
  const int warp_n0 = (warp / 2) * 32;
  // The lane's ldmatrix rows, per k16 half of the tile. Rows 16 apart share their
  // swizzle, so the warp's other 16-row blocks are these plus a constant.
  int a_frag[2];
  int b_frag[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // A: lanes 0-15 give rows 0-15 at chunk 2h, lanes 16-31 the same rows at 2h + 1.
    a_frag[h] = fprop_tile_offset(warp_m0 + lane % 16, 2 * h + lane / 16);
    // B: matrices (n 0-7, chunk 2h), (n 0-7, 2h + 1), (n 8-15, 2h), (n 8-15, 2h + 1).
    b_frag[h] = fprop_tile_offset(warp_n0 + lane % 8 + 8 * (lane / 16), 2 * h + (lane / 8) % 2);
  }
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }
  }
  int read_stage = 0;                                             // tile kt's stage
  int write_stage = (kFpropStages - 1) * kFpropStageElements;  // tile kt + stages - 1's
  for (int kt = 0; kt < k_tiles; ++kt) {
    // Tile kt has landed for this thread; after the barrier for every thread, and
    // every warp is done with tile kt - 1, whose stage the next copies overwrite.
    ak_cp_async_wait<kFpropStages - 2>();
    __syncthreads();
    if (kt + kFpropStages - 1 < k_tiles) loader.load(a_ring, b_ring, write_stage, s);
    ak_cp_async_commit();
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t af[4][4];
      uint32_t bf[2][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        ak_ldmatrix<4>(af[i], a_ring + (read_stage + a_frag[h] + 16 * i * kFpropTileK));
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        ak_ldmatrix<4>(bf[j], b_ring + (read_stage + b_frag[h] + 16 * j * kFpropTileK));
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint32_t b[2] = {bf[j / 2][2 * (j % 2)], bf[j / 2][2 * (j % 2) + 1]};
          ak_mma_m16n8k16<T>(acc[i][j], af[i], b);
        }
      }
    }
    read_stage = read_stage == (kFpropStages - 1) * kFpropStageElements
                     ? 0 : read_stage + kFpropStageElements;
    write_stage = write_stage == (kFpropStages - 1) * kFpropStageElements
                      ? 0 : write_stage + kFpropStageElements;
  }
  ak_cp_async_wait_all();  // only empty groups are left
  // Epilogue: bias and ReLU on the accumulators, staged as 16-bit values in the (now
  // idle) ring as a kFpropTileM x kFpropTileN tile, then stored by rows of 16-byte
  // chunks: a warp writes 2 output pixels x 256 contiguous bytes.
  __syncthreads();  // every warp is done reading the ring
  T* const staged = smem;
  const int g = lane / 4;
  const int t = lane % 4;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int col = warp_n0 + 8 * j + 2 * t;
    const int co = group * s.out_group() + n0 + col;
    float bias[2] = {0.0f, 0.0f};
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (a.bias != nullptr && n0 + col + e < s.out_group()) {
        bias[e] = to_acc(ak_ld(a.bias + co + e));
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float v[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          v[e] = acc[i][j][2 * half + e] + bias[e];
          v[e] = v[e] < 0.0f ? 0.0f : v[e];  // keeps NaN, as F.relu does
        }
        const int row = warp_m0 + 16 * i + g + 8 * half;
        ak_st(reinterpret_cast<OutputPair<T>*>(staged + row * kFpropEpilogueStride + col),
              (OutputPair<T>{from_acc<T>(v[0]), from_acc<T>(v[1])}));
      }
    }
  }
  __syncthreads();
  const int64_t rows = s.batch * s.out_pixels();
  // 16-byte stores need every chunk of y 16-byte aligned.
  const bool vectors = s.out_channels % kFpropChunk == 0 && s.out_group() % kFpropChunk == 0;
  constexpr int kChunksPerRow = kFpropTileN / kFpropChunk;
  const int chunk = static_cast<int>(threadIdx.x) % kChunksPerRow;
  const int n = n0 + chunk * kFpropChunk;
#pragma unroll
  for (int pass = 0; pass < kFpropTileM * kChunksPerRow / kFpropThreads; ++pass) {
    const int row = static_cast<int>(threadIdx.x) / kChunksPerRow +
                    pass * (kFpropThreads / kChunksPerRow);
    const int64_t m = m0 + row;
    if (m >= rows || n >= s.out_group()) continue;
    const T* from = staged + row * kFpropEpilogueStride + chunk * kFpropChunk;
    T* out = a.y + m * s.out_channels + group * s.out_group() + n;
    if (vectors && n + kFpropChunk <= s.out_group()) {
      ak_st(reinterpret_cast<uint4*>(out), ak_ld_as<uint4>(from));
    } else {
      for (int e = 0; e < kFpropChunk && n + e < s.out_group(); ++e) ak_st(out + e, ak_ld(from + e));
    }
  }
}

// ---- launch plans and launches (shared by the CUDA launcher and the emulation tests) -------

struct ConvPlan {
  bool valid;
  const char* reason;
  dim3 grid;
  bool pipelined;        // forward only: conv2d_relu_forward_nhwc_kernel (OHWI weight)
  int slices;            // grad_w only
  int64_t slice_depth;   // grad_w only
};

inline ConvPlan plan_gemm(int64_t rows, int64_t cols, int64_t layers, int tile_m = kConvTileM,
                          int tile_n = kConvTileN) {
  ConvPlan plan{};
  const int64_t grid_x = ceil_div<int64_t>(rows, tile_m);
  const int64_t grid_y = ceil_div<int64_t>(cols, tile_n);
  plan.valid = grid_x <= kConvMaxGridX && grid_y <= kConvMaxGridYZ && layers <= kConvMaxGridYZ;
  plan.reason = plan.valid ? "" : "the GEMM has more tiles than a CUDA grid can cover";
  plan.grid = dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y),
                   static_cast<unsigned>(layers));
  plan.slices = 1;
  return plan;
}

// `pipelined`: the caller has checked conv_forward_is_pipelined and the operands'
// 16-byte alignment, and passes the weight as OHWI.
inline ConvPlan plan_conv_forward(const ConvShape& s, bool pipelined = false) {
  ConvPlan plan = pipelined ? plan_gemm(s.batch * s.out_pixels(), s.out_group(), s.groups,
                                        kFpropTileM, kFpropTileN)
                            : plan_gemm(s.batch * s.out_pixels(), s.out_group(), s.groups);
  plan.pipelined = pipelined;
  return plan;
}

// Blocks cover the phase with the most pixels; those past a smaller phase's end exit.
inline ConvPlan plan_conv_grad_input(const ConvShape& s) {
  int64_t most_pixels = 0;
  for (int phase = 0; phase < grad_input_phase_count(s); ++phase) {
    most_pixels = ak_max(most_pixels, grad_input_phase(s, phase).pixels());
  }
  return plan_gemm(s.batch * most_pixels, s.in_group(),
                   static_cast<int64_t>(s.groups) * grad_input_phase_count(s));
}

// Splits K = N * OH * OW so that about kConvSplitTargetBlocks blocks run,
// each slice at least kConvMinTilesPerSplit K tiles long.
inline ConvPlan plan_conv_grad_weight(const ConvShape& s) {
  const int64_t depth = s.batch * s.out_pixels();
  const int64_t tiles = ceil_div<int64_t>(s.out_group(), kConvTileM) *
                        ceil_div<int64_t>(s.filter_size(), kConvTileN) * s.groups;
  const int64_t k_tiles = ceil_div<int64_t>(depth, kConvTileK);
  const int64_t by_occupancy = ceil_div<int64_t>(kConvSplitTargetBlocks, tiles);
  const int64_t by_length = ak_max<int64_t>(1, k_tiles / kConvMinTilesPerSplit);
  const int64_t by_grid = ak_max<int64_t>(1, kConvMaxGridYZ / s.groups);
  const int64_t wanted = ak_max<int64_t>(1, ak_min(by_occupancy, ak_min(by_length, by_grid)));
  const int64_t slice_depth = ceil_div<int64_t>(k_tiles, wanted) * kConvTileK;
  const int64_t slices = ceil_div<int64_t>(depth, slice_depth);
  ConvPlan plan = plan_gemm(s.out_group(), s.filter_size(), slices * s.groups);
  plan.slices = static_cast<int>(slices);
  plan.slice_depth = slice_depth;
  return plan;
}

inline dim3 conv_reduce_grid(int64_t weight_numel) {
  return dim3(static_cast<unsigned>(
      ak_min<int64_t>(ceil_div<int64_t>(weight_numel, kConvReduceThreads), 65535)));
}

// `tf32`: fp32 GEMMs may run on TF32 tensor cores (the caller checked sm_80+);
// other dtypes ignore it.
template <typename T>
void launch_conv2d_relu_forward(const ConvForwardArgs<T>& args, const ConvPlan& plan, bool tf32,
                                cudaStream_t stream) {
  if constexpr (kIsHalfType<T>) {
    if (plan.pipelined) {
      auto pipelined = &conv2d_relu_forward_nhwc_kernel<T>;
      AK_LAUNCH(pipelined, plan.grid, dim3(kFpropThreads), kFpropSmemBytes, stream)(args);
      return;
    }
  }
  auto kernel = &conv2d_relu_forward_kernel<T, false>;
  if constexpr (std::is_same_v<T, float>) {
    if (tf32) kernel = &conv2d_relu_forward_kernel<T, true>;
  }
  AK_LAUNCH(kernel, plan.grid, dim3(kConvThreads), 0, stream)(args);
}

template <typename T>
void launch_conv2d_relu_grad_input(const ConvBackwardArgs<T>& args, const ConvPlan& plan,
                                   bool tf32, cudaStream_t stream) {
  auto kernel = &conv2d_relu_grad_input_kernel<T, false>;
  if constexpr (std::is_same_v<T, float>) {
    if (tf32) kernel = &conv2d_relu_grad_input_kernel<T, true>;
  }
  AK_LAUNCH(kernel, plan.grid, dim3(kConvThreads), 0, stream)(args);
}

// Two launches: the sliced GEMM into args.grad_w_slices (plan.slices x the
// weight's size), then the reduction into grad_w.
template <typename T, typename AfterLaunch>
void launch_conv2d_relu_grad_weight(const ConvBackwardArgs<T>& args, const ConvPlan& plan,
                                    T* grad_w, bool tf32, cudaStream_t stream,
                                    const AfterLaunch& after_launch) {
  auto gemm = &conv2d_relu_grad_weight_kernel<T, false>;
  if constexpr (std::is_same_v<T, float>) {
    if (tf32) gemm = &conv2d_relu_grad_weight_kernel<T, true>;
  }
  AK_LAUNCH(gemm, plan.grid, dim3(kConvThreads), 0, stream)(args);
  after_launch();
  const int64_t numel = static_cast<int64_t>(args.s.out_channels) * args.s.filter_size();
  auto reduce = &conv2d_relu_grad_weight_reduce_kernel<T>;
  AK_LAUNCH(reduce, conv_reduce_grid(numel), dim3(kConvReduceThreads), 0, stream)(
      args.grad_w_slices, plan.slices, numel, grad_w);
  after_launch();
}

template <typename T>
void launch_conv2d_relu_grad_bias(const T* grad_y, const T* y, const ConvShape& s, T* grad_b,
                                  cudaStream_t stream) {
  auto kernel = &conv2d_relu_grad_bias_kernel<T>;
  AK_LAUNCH(kernel, dim3(static_cast<unsigned>(s.out_channels)), dim3(kConvBiasThreads), 0,
            stream)(grad_y, y, s, grad_b);
}

}  // namespace alexnet_kernels::kernels
