// 2-D max pooling on the CPU, forward and backward, for NCHW and NHWC input.
//
// NCHW: a thread owns whole (image, channel) planes. Each input row it needs
// is copied once into a small cache-resident buffer, padded with -inf and split
// into `stride_w` phases (phase r holds padded columns r, r + stride_w, ...).
// Every (kh, kw) tap of a row of outputs then reads a contiguous slice of one
// phase, so the window maximum runs in full SIMD vectors even for AlexNet's
// 3x3 / stride 2 windows, which a plain loop leaves scalar. The backward
// gathers in the same phase layout: each entry of an input row sums, in
// vectors, the gradients of the covering outputs whose argmax it is, read as
// shifted slices of the plane's grad_y; then the row is written once.
// Deterministic, no atomics, no zero-filled full-size buffer.
//
// NHWC: the vector dimension is the channel. The forward takes per output
// pixel the maximum over the window's input pixels; the backward gathers, per
// input pixel, from the outputs whose windows cover it.
//
// Ties and NaNs follow PyTorch: the first maximum in window order wins, a NaN
// always replaces the running maximum (so the last NaN wins), and the argmax of
// a window starts at its first position inside the input.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/allocation.h"
#include "cpu/max_pool_rows.h"
#include "cpu/vectorize.h"
#include "max_pool.h"

namespace alexnet_kernels {
namespace {

using kernels::PoolWindow;


// Argmax offsets as the row kernels handle them.
using Index = int32_t;

// Rows are padded to whole chunks, so the row kernels need no bounds checks.
inline int64_t round_up_to_chunks(int64_t n) {
  return (n + cpu::kRowChunk - 1) / cpu::kRowChunk * cpu::kRowChunk;
}

// Entries [lo, hi) of phase r, those with 0 <= r + j * stride_w - pad_w < in_w,
// are inside the input row; the others are padding.
struct PhaseEntries {
  int64_t lo;
  int64_t hi;
};

// One input row, padded with -inf and split into stride_w phases of
// `phase_len` elements: padded column p = iw + pad_w lives at [p % s][p / s].
struct PhaseRows {
  int64_t phase_len;  // covers every tap of every vector chunk of an output row
  int64_t row_len;    // stride_w * phase_len
  int64_t span;       // input rows one window spans; ring slots
  // Per phase, the same for every row: computed once, as the divisions they
  // take cost more than splitting a short row.
  std::vector<PhaseEntries> inside;

  explicit PhaseRows(const PoolWindow& w) : inside(w.stride_w) {
    phase_len = round_up_to_chunks(w.out_w) +
                static_cast<int64_t>(w.kernel_w - 1) * w.dilation_w / w.stride_w + 1;
    row_len = w.stride_w * phase_len;
    span = static_cast<int64_t>(w.kernel_h - 1) * w.dilation_h + 1;
    for (int r = 0; r < w.stride_w; ++r) {
      const int64_t lo = std::min<int64_t>(
          phase_len, std::max<int64_t>(0, (w.pad_w - r + w.stride_w - 1) / w.stride_w));
      // Floor division: the numerator is negative when the phase starts right of the
      // row's last column (stride wider than the padded row), and truncation would
      // then count one entry outside the row, read and written out of bounds.
      const int64_t last = w.in_w - 1 + w.pad_w - r;
      const int64_t hi = std::min<int64_t>(
          phase_len, std::max<int64_t>(lo, last < 0 ? 0 : last / w.stride_w + 1));
      inside[r] = {lo, hi};
    }
  }
};

// Ring of `span` phase rows keyed by input row; slot ih % span holds row ih.
template <typename Acc>
struct RowRing {
  std::vector<Acc> data;
  std::vector<int64_t> tag;
  int64_t row_len;

  explicit RowRing(const PhaseRows& rows) : data(rows.span * rows.row_len), tag(rows.span, -1),
                                   row_len(rows.row_len) {}

  // Row ih's slot, now marked as holding it; `fresh` when it held another row
  // and must be filled. One modulo per row, not one per query: it is a division.
  struct Slot {
    Acc* row;
    bool fresh;
  };
  Slot claim(int64_t ih) {
    const int64_t index = ih % static_cast<int64_t>(tag.size());
    const bool fresh = tag[index] != ih;
    tag[index] = ih;
    return {data.data() + index * row_len, fresh};
  }
};

// dst[j] = src[j * stride] for j < count. Strides 1 and 2 (AlexNet's) get
// their own loops because the vectoriser needs the stride at compile time.
template <typename From, typename To>
AK_CPU_INLINE void gather_strided(const From* __restrict src, int64_t stride, int64_t count,
                                  To* __restrict dst) {
  if (stride == 1) {
    for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<To>(src[j]);
  } else if (stride == 2) {
    for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<To>(src[2 * j]);
  } else {
    for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<To>(src[j * stride]);
  }
}

// dst[j * stride] = src[j] for j < count.
template <typename From, typename To>
AK_CPU_INLINE void scatter_strided(const From* __restrict src, int64_t count, int64_t stride,
                                   To* __restrict dst) {
  if (stride == 1) {
    for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<To>(src[j]);
  } else if (stride == 2) {
    for (int64_t j = 0; j < count; ++j) dst[2 * j] = static_cast<To>(src[j]);
  } else {
    for (int64_t j = 0; j < count; ++j) dst[j * stride] = static_cast<To>(src[j]);
  }
}

template <typename T, typename Acc>
AK_CPU_INLINE void split_row_into_phases(const T* x_row, const PoolWindow& w,
                                         const PhaseRows& rows, Acc* out) {
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  for (int r = 0; r < w.stride_w; ++r) {
    Acc* phase = out + r * rows.phase_len;
    const auto [lo, hi] = rows.inside[r];
    for (int64_t j = 0; j < lo; ++j) phase[j] = neg_inf;
    if (hi > lo) {
      gather_strided(x_row + (lo * w.stride_w + r - w.pad_w), w.stride_w, hi - lo, phase + lo);
    }
    for (int64_t j = hi; j < rows.phase_len; ++j) phase[j] = neg_inf;
  }
}

// Inverse of split_row_into_phases for the columns inside the row.
template <typename T, typename Acc>
AK_CPU_INLINE void merge_phases_into_row(const Acc* phases, int64_t phase_stride,
                                         const PoolWindow& w, const PhaseRows& rows, T* x_row) {
  for (int r = 0; r < w.stride_w; ++r) {
    const Acc* phase = phases + r * phase_stride;
    const auto [lo, hi] = rows.inside[r];
    if (hi > lo) {
      scatter_strided(phase + lo, hi - lo, w.stride_w, x_row + (lo * w.stride_w + r - w.pad_w));
    }
  }
}

// First in-window tap column per output column (0 away from the left border),
// padded to whole chunks.
std::vector<Index> first_columns(const PoolWindow& w) {
  std::vector<Index> first(round_up_to_chunks(w.out_w), 0);
  for (int64_t ow = 0; ow < w.out_w; ++ow) {
    first[ow] = kernels::first_tap_inside(ow, w.stride_w, w.pad_w, w.dilation_w);
  }
  return first;
}

// Where tap column kw reads in the phase layout: phase `phase`, entry j + shift
// for output column j.
struct TapColumn {
  int64_t phase;
  int64_t shift;
};

inline std::vector<TapColumn> tap_columns(const PoolWindow& w) {
  std::vector<TapColumn> columns(w.kernel_w);
  for (int kw = 0; kw < w.kernel_w; ++kw) {
    const int64_t offset = static_cast<int64_t>(kw) * w.dilation_w;
    columns[kw] = {offset % w.stride_w, offset / w.stride_w};
  }
  return columns;
}

// WithArgmax = false: y only, argmax is not touched (null).
template <bool WithArgmax, typename T, typename A>
AK_CPU_INLINE void max_pool_forward_nchw_planes(const T* x, T* y, A* argmax,
                                                      const PoolWindow& w, int64_t plane_begin,
                                                      int64_t plane_end) {
  using Acc = at::opmath_type<T>;
  const PhaseRows rows(w);
  RowRing<Acc> ring(rows);
  const std::vector<Index> first_col = first_columns(w);
  const int64_t padded_out_w = round_up_to_chunks(w.out_w);
  std::vector<Acc> best(padded_out_w);
  std::vector<Index> best_tap(WithArgmax ? padded_out_w : 0);
  std::vector<Index> first_tap(WithArgmax ? padded_out_w : 0);
  const std::vector<TapColumn> columns = tap_columns(w);
  std::vector<cpu::TapRow<Acc, Index>> taps(static_cast<size_t>(w.kernel_h) * w.kernel_w);
  const cpu::RowMaxFn<Acc, Index> row_max = cpu::select_row_max<Acc, Index, WithArgmax>();
  int first_tap_row = -1;  // the kh_first that first_tap holds
  for (int64_t plane = plane_begin; plane < plane_end; ++plane) {
    const T* x_plane = x + plane * w.in_h * w.in_w;
    std::fill(ring.tag.begin(), ring.tag.end(), -1);
    for (int64_t oh = 0; oh < w.out_h; ++oh) {
      const int kh_first = kernels::first_tap_inside(oh, w.stride_h, w.pad_h, w.dilation_h);
      // Only rows at the top border differ.
      if (WithArgmax && kh_first != first_tap_row) {
        for (int64_t ow = 0; ow < padded_out_w; ++ow) {
          first_tap[ow] = first_col[ow] + kh_first * w.kernel_w;
        }
        first_tap_row = kh_first;
      }
      int count = 0;
      for (int kh = 0; kh < w.kernel_h; ++kh) {
        const int64_t ih = w.input_row(oh, kh);
        if (ih < 0 || ih >= w.in_h) continue;
        const auto [row, fresh] = ring.claim(ih);
        if (fresh) {
          split_row_into_phases(x_plane + ih * w.in_w, w, rows, row);
        }
        for (int kw = 0; kw < w.kernel_w; ++kw) {
          const TapColumn column = columns[kw];
          taps[count++] = {row + column.phase * rows.phase_len + column.shift,
                           static_cast<Index>(kh * w.kernel_w + kw)};
        }
      }
      row_max(taps.data(), count, padded_out_w, first_tap.data(), best.data(), best_tap.data());
      T* y_row = y + (plane * w.out_h + oh) * w.out_w;
      // Two loops, so each vectorises (a single loop storing two types did not).
      for (int64_t ow = 0; ow < w.out_w; ++ow) {
        y_row[ow] = static_cast<T>(best[ow]);
      }
      if constexpr (WithArgmax) {
        A* a_row = argmax + (plane * w.out_h + oh) * w.out_w;
        for (int64_t ow = 0; ow < w.out_w; ++ow) {
          a_row[ow] = static_cast<A>(best_tap[ow]);
        }
      }
    }
  }
}

template <typename T, typename A>
AK_CPU_INLINE void max_pool_backward_nchw_planes(const T* grad_y, const A* argmax, T* grad_x,
                                                       const PoolWindow& w, int64_t plane_begin,
                                                       int64_t plane_end) {
  using Acc = at::opmath_type<T>;
  const PhaseRows rows(w);
  const std::vector<TapColumn> columns = tap_columns(w);
  // The plane's grad_y and argmax, widened, each row with `front` leading and
  // enough trailing entries of zero gradient (and a tap no window has) that
  // phase entry j of tap kw reads output column j - shift without bounds checks.
  const int64_t front = columns.back().shift;
  const int64_t sum_stride = round_up_to_chunks(rows.phase_len);
  const int64_t padded_row = front + sum_stride;
  std::vector<Acc> g_plane(w.out_h * padded_row, Acc(0));
  std::vector<Index> tap_plane(w.out_h * padded_row, Index(-1));
  std::vector<Acc> sums(w.stride_w * sum_stride);
  // Phase entries past the input row's last column need no sum.
  int64_t used = 0;
  for (int r = 0; r < w.stride_w; ++r) {
    used = std::max(used, rows.inside[r].hi);
  }
  const int64_t gather_length = round_up_to_chunks(used);

  // Which (output row, tap column) pairs feed each (input row, phase): the same
  // for every plane, so computed once; only the plane's buffers differ.
  struct Source {
    int64_t start;  // into g_plane / tap_plane
    Index tap;
  };
  std::vector<Source> sources;
  std::vector<int64_t> first_source(w.in_h * w.stride_w + 1, 0);
  for (int64_t ih = 0; ih < w.in_h; ++ih) {
    const auto covering = kernels::covering_outputs(ih, w.out_h, w.kernel_h, w.stride_h,
                                                    w.pad_h, w.dilation_h);
    for (int r = 0; r < w.stride_w; ++r) {
      for (int64_t oh = covering.first; oh <= covering.last; ++oh) {
        const int64_t dh = ih + w.pad_h - oh * w.stride_h;
        if (dh % w.dilation_h != 0) continue;
        for (int kw = 0; kw < w.kernel_w; ++kw) {
          if (columns[kw].phase != r) continue;
          sources.push_back({oh * padded_row + front - columns[kw].shift,
                             static_cast<Index>((dh / w.dilation_h) * w.kernel_w + kw)});
        }
      }
      first_source[ih * w.stride_w + r + 1] = static_cast<int64_t>(sources.size());
    }
  }
  std::vector<cpu::GradientRow<Acc, Index>> gradients(sources.size());
  const cpu::RowGatherFn<Acc, Index> row_gather = cpu::select_row_gather<Acc, Index>();

  for (int64_t plane = plane_begin; plane < plane_end; ++plane) {
    for (int64_t oh = 0; oh < w.out_h; ++oh) {
      const int64_t out_offset = (plane * w.out_h + oh) * w.out_w;
      Acc* g_row = g_plane.data() + oh * padded_row + front;
      Index* tap_row = tap_plane.data() + oh * padded_row + front;
      for (int64_t ow = 0; ow < w.out_w; ++ow) {
        g_row[ow] = static_cast<Acc>(grad_y[out_offset + ow]);
      }
      for (int64_t ow = 0; ow < w.out_w; ++ow) {
        tap_row[ow] = static_cast<Index>(argmax[out_offset + ow]);
      }
    }
    for (int64_t k = 0; k < w.in_h * w.stride_w; ++k) {
      const int64_t begin = first_source[k];
      const int count = static_cast<int>(first_source[k + 1] - begin);
      for (int i = 0; i < count; ++i) {
        const Source& source = sources[begin + i];
        gradients[i] = {g_plane.data() + source.start, tap_plane.data() + source.start,
                        source.tap};
      }
      const int64_t r = k % w.stride_w;
      row_gather(gradients.data(), count, gather_length, sums.data() + r * sum_stride);
      if (r == w.stride_w - 1) {
        const int64_t ih = k / w.stride_w;
        merge_phases_into_row(sums.data(), sum_stride, w, rows,
                              grad_x + (plane * w.in_h + ih) * w.in_w);
      }
    }
  }
}

// NHWC forward: output pixels [begin, end) of the flattened (n, oh, ow) range;
// WithArgmax = false: y only, argmax is not touched (null).
template <bool WithArgmax, typename T, typename A>
AK_CPU_INLINE void max_pool_forward_nhwc_pixels(const T* x, T* y, A* argmax,
                                                      const PoolWindow& w, int64_t begin,
                                                      int64_t end) {
  using Acc = at::opmath_type<T>;
  const int64_t C = w.channels;
  std::vector<Acc> best(C);
  std::vector<Index> best_tap(WithArgmax ? C : 0);
  for (int64_t pixel = begin; pixel < end; ++pixel) {
    const int64_t ow = pixel % w.out_w;
    const int64_t oh = (pixel / w.out_w) % w.out_h;
    const int64_t n = pixel / (w.out_w * w.out_h);
    const int kh_first = kernels::first_tap_inside(oh, w.stride_h, w.pad_h, w.dilation_h);
    const int kw_first = kernels::first_tap_inside(ow, w.stride_w, w.pad_w, w.dilation_w);
    std::fill(best.begin(), best.end(), -std::numeric_limits<Acc>::infinity());
    if constexpr (WithArgmax) {
      std::fill(best_tap.begin(), best_tap.end(), Index(kh_first * w.kernel_w + kw_first));
    }
    for (int kh = kh_first; kh < w.kernel_h; ++kh) {
      const int64_t ih = w.input_row(oh, kh);
      if (ih >= w.in_h) break;
      for (int kw = kw_first; kw < w.kernel_w; ++kw) {
        const int64_t iw = w.input_col(ow, kw);
        if (iw >= w.in_w) break;
        const T* xp = x + ((n * w.in_h + ih) * w.in_w + iw) * C;
        const Index tap = kh * w.kernel_w + kw;
        for (int64_t c = 0; c < C; ++c) {
          const Acc v = static_cast<Acc>(xp[c]);
          const bool take = (v > best[c]) | (v != v);
          best[c] = take ? v : best[c];
          if constexpr (WithArgmax) best_tap[c] = take ? tap : best_tap[c];
        }
      }
    }
    T* yp = y + pixel * C;
    for (int64_t c = 0; c < C; ++c) {
      yp[c] = static_cast<T>(best[c]);
    }
    if constexpr (WithArgmax) {
      A* ap = argmax + pixel * C;
      for (int64_t c = 0; c < C; ++c) {
        ap[c] = static_cast<A>(best_tap[c]);
      }
    }
  }
}

// NHWC backward: input pixels [begin, end) of the flattened (n, ih, iw) range,
// each summing the gradients of the covering windows whose argmax it is, in
// (oh, ow) order.
template <typename T, typename A>
AK_CPU_INLINE void max_pool_backward_nhwc_pixels(const T* grad_y, const A* argmax,
                                                       T* grad_x, const PoolWindow& w,
                                                       int64_t begin, int64_t end) {
  using Acc = at::opmath_type<T>;
  const int64_t C = w.channels;
  std::vector<Acc> sum(C);
  for (int64_t pixel = begin; pixel < end; ++pixel) {
    const int64_t iw = pixel % w.in_w;
    const int64_t ih = (pixel / w.in_w) % w.in_h;
    const int64_t n = pixel / (w.in_w * w.in_h);
    std::fill(sum.begin(), sum.end(), Acc(0));
    const auto rows = kernels::covering_outputs(ih, w.out_h, w.kernel_h, w.stride_h, w.pad_h,
                                                w.dilation_h);
    const auto cols = kernels::covering_outputs(iw, w.out_w, w.kernel_w, w.stride_w, w.pad_w,
                                                w.dilation_w);
    for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
      const int64_t dh = ih + w.pad_h - oh * w.stride_h;
      if (dh % w.dilation_h != 0) continue;
      for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
        const int64_t dw = iw + w.pad_w - ow * w.stride_w;
        if (dw % w.dilation_w != 0) continue;
        const Index tap = static_cast<Index>((dh / w.dilation_h) * w.kernel_w + dw / w.dilation_w);
        const int64_t offset = ((n * w.out_h + oh) * w.out_w + ow) * C;
        const T* gp = grad_y + offset;
        const A* ap = argmax + offset;
        for (int64_t c = 0; c < C; ++c) {
          sum[c] += static_cast<Index>(ap[c]) == tap ? static_cast<Acc>(gp[c]) : Acc(0);
        }
      }
    }
    T* out = grad_x + pixel * C;
    for (int64_t c = 0; c < C; ++c) {
      out[c] = static_cast<T>(sum[c]);
    }
  }
}

// Work items of at least this many output (or input) elements per task.
constexpr int64_t kGrainElements = 32768;

// What both forwards start from: the checked window, the layout they work in
// and x in that layout.
struct ForwardInput {
  PoolWindow w;
  at::MemoryFormat format;
  at::Tensor x;
};

ForwardInput prepare_forward(const char* op, const at::Tensor& x_in,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_pool_input(op, x_in, "x");
  const PoolWindow w =
      make_pool_window(x_in.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  const at::MemoryFormat format = max_pool_memory_format(x_in);
  return {w, format, x_in.contiguous(format)};
}

// The forward over the whole batch, in parallel; argmax is null when !WithArgmax.
template <bool WithArgmax, typename T, typename A>
void run_forward(const ForwardInput& input, T* y, A* argmax) {
  const PoolWindow& w = input.w;
  const T* x = input.x.const_data_ptr<T>();
  if (input.format == at::MemoryFormat::Contiguous) {
    const int64_t grain = std::max<int64_t>(1, kGrainElements / (w.out_h * w.out_w));
    at::parallel_for(0, w.batch * w.channels, grain, [&](int64_t begin, int64_t end) {
      cpu::run_with_cpu_capability([&]() AK_CPU_INLINE_LAMBDA {
        max_pool_forward_nchw_planes<WithArgmax>(x, y, argmax, w, begin, end);
      });
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, kGrainElements / w.channels);
    at::parallel_for(0, w.batch * w.out_h * w.out_w, grain, [&](int64_t begin, int64_t end) {
      cpu::run_with_cpu_capability([&]() AK_CPU_INLINE_LAMBDA {
        max_pool_forward_nhwc_pixels<WithArgmax>(x, y, argmax, w, begin, end);
      });
    });
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cpu(const at::Tensor& x_in,
                                                  at::IntArrayRef kernel_size,
                                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                                  at::IntArrayRef dilation, bool ceil_mode) {
  const ForwardInput input =
      prepare_forward("max_pool2d", x_in, kernel_size, stride, padding, dilation, ceil_mode);
  const at::TensorOptions options = input.x.options();
  at::Tensor y = cpu::empty_output(pool_output_sizes(input.w), options, input.format);
  at::Tensor argmax = cpu::empty_output(pool_output_sizes(input.w),
                                        options.dtype(argmax_dtype(input.w)), input.format);
  if (y.numel() == 0) {
    return {y, argmax};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.x.scalar_type(),
                                  "max_pool2d_cpu", [&] {
    dispatch_argmax_type(argmax.scalar_type(), [&](auto index_tag) {
      using A = decltype(index_tag);
      run_forward<true>(input, y.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<A>());
    });
  });
  return {y, argmax};
}

// max_pool2d's y alone, bit for bit, without computing or writing the argmax:
// the inference forward.
at::Tensor max_pool2d_values_cpu(const at::Tensor& x_in, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, bool ceil_mode) {
  const ForwardInput input = prepare_forward("max_pool2d_values", x_in, kernel_size, stride,
                                             padding, dilation, ceil_mode);
  at::Tensor y =
      cpu::empty_output(pool_output_sizes(input.w), input.x.options(), input.format);
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.x.scalar_type(),
                                  "max_pool2d_values_cpu", [&] {
    run_forward<false>(input, y.mutable_data_ptr<scalar_t>(), static_cast<uint8_t*>(nullptr));
  });
  return y;
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& argmax_in,
                                   at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode) {
  const PoolWindow w = make_pool_backward_window(grad_y_in, argmax_in, input_size, kernel_size,
                                                 stride, padding, dilation, ceil_mode);
  // The forward wrote argmax in the layout it worked in; follow it.
  const at::MemoryFormat format = max_pool_memory_format(argmax_in);
  const at::Tensor grad_y = grad_y_in.contiguous(format);
  const at::Tensor argmax = argmax_in.contiguous(format);
  at::Tensor grad_x = cpu::empty_output(input_size, grad_y.options(), format);
  if (grad_x.numel() == 0) {
    return grad_x;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_y.scalar_type(),
                                  "max_pool2d_backward_cpu", [&] {
    dispatch_argmax_type(argmax.scalar_type(), [&](auto index_tag) {
      using A = decltype(index_tag);
      const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
      const A* ap = argmax.const_data_ptr<A>();
      scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
      if (format == at::MemoryFormat::Contiguous) {
        const int64_t grain = std::max<int64_t>(1, kGrainElements / (w.in_h * w.in_w));
        at::parallel_for(0, w.batch * w.channels, grain, [&](int64_t begin, int64_t end) {
          cpu::run_with_cpu_capability([&]() AK_CPU_INLINE_LAMBDA {
            max_pool_backward_nchw_planes(gp, ap, gxp, w, begin, end);
          });
        });
      } else {
        const int64_t grain = std::max<int64_t>(1, kGrainElements / w.channels);
        at::parallel_for(0, w.batch * w.in_h * w.in_w, grain, [&](int64_t begin, int64_t end) {
          cpu::run_with_cpu_capability([&]() AK_CPU_INLINE_LAMBDA {
            max_pool_backward_nhwc_pixels(gp, ap, gxp, w, begin, end);
          });
        });
      }
    });
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("max_pool2d", &max_pool2d_cpu);
  m.impl("max_pool2d_values", &max_pool2d_values_cpu);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cpu);
}

}  // namespace alexnet_kernels
