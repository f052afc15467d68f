// LRN on the CPU: one pass over x for the forward, one pass over (x, y, grad_y)
// for the backward, parallel over independent (image, pixel-block) work items.
//
// Contiguous (N, C, pixels) input works on chunks of pixels so the inner loops
// run along contiguous pixels; channels_last (N, pixels, C) input works pixel
// by pixel along contiguous channels. Either way the squares a window needs sit
// in a small per-thread buffer (fp32 for half types) that stays in cache, and
// window sums are taken directly (no running sum, whose add/subtract drift
// would grow with C).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/add.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/allocation.h"
#include "cpu/vectorize.h"
#include "lrn.h"

namespace alexnet_kernels {
namespace {

template <typename Acc>
struct LrnCoefficients {
  int64_t channels;
  int64_t lo;  // window of channel c: [c - lo, c + hi], clamped to the channels that exist
  int64_t hi;
  Acc alpha_over_size;
  Acc beta;
  Acc k;
  // 2 * alpha * beta / size, applied as x * (grad_coef * sum): (grad_coef * x) would
  // underflow to 0 for a subnormal x and make 0 * inf = NaN of an infinite sum.
  Acc grad_coef;
};

template <typename Acc>
LrnCoefficients<Acc> make_coefficients(int64_t channels, int64_t size, double alpha, double beta,
                                       double k) {
  // Channels beyond [0, C) are zero, so a window wider than C reaches no further.
  const int64_t reach = std::max<int64_t>(channels - 1, 0);
  return {channels,
          std::min(size / 2, reach),
          std::min((size - 1) / 2, reach),
          static_cast<Acc>(alpha / static_cast<double>(size)),
          static_cast<Acc>(beta),
          static_cast<Acc>(k),
          static_cast<Acc>(2.0 * alpha * beta / static_cast<double>(size))};
}

// S^-beta and 1/S for one element. The common exponents avoid pow(), which
// GCC cannot vectorise: with r = 1/sqrt(S), S^-0.75 = r * sqrt(r) and 1/S = r * r.
enum class Beta { kThreeQuarters, kHalf, kOne, kGeneral };

template <Beta kBeta, typename Acc>
struct ScalePowers {
  Acc pow_neg_beta;
  Acc inverse;
};

template <Beta kBeta, typename Acc>
AK_CPU_INLINE ScalePowers<kBeta, Acc> scale_powers(Acc scale, Acc beta) {
  if constexpr (kBeta == Beta::kThreeQuarters) {
    const Acc r = Acc(1) / std::sqrt(scale);
    return {r * std::sqrt(r), r * r};
  } else if constexpr (kBeta == Beta::kHalf) {
    const Acc r = Acc(1) / std::sqrt(scale);
    return {r, r * r};
  } else if constexpr (kBeta == Beta::kOne) {
    const Acc inverse = Acc(1) / scale;
    return {inverse, inverse};
  } else {
    return {std::pow(scale, -beta), Acc(1) / scale};
  }
}

// Calls fn(std::integral_constant<Beta, ...>) for the exponent's specialisation.
template <typename Fn>
void dispatch_beta(double beta, const Fn& fn) {
  if (beta == 0.75) {
    fn(std::integral_constant<Beta, Beta::kThreeQuarters>{});
  } else if (beta == 0.5) {
    fn(std::integral_constant<Beta, Beta::kHalf>{});
  } else if (beta == 1.0) {
    fn(std::integral_constant<Beta, Beta::kOne>{});
  } else {
    fn(std::integral_constant<Beta, Beta::kGeneral>{});
  }
}

// Per-work-item scratch, allocated once per parallel chunk.
template <typename Acc>
struct Scratch {
  explicit Scratch(int64_t rows, int64_t cols, int arrays)
      : stride(rows * cols), data(static_cast<size_t>(stride * arrays)) {}
  Acc* array(int i) { return data.data() + i * stride; }
  int64_t stride;
  std::vector<Acc> data;
};

// ---- contiguous (N, C, pixels): vectors run along a chunk of pixels -------
//
// A work item walks the channels of one image over a chunk of `width` pixels,
// so x, grad_y and the output are read and written as sequential rows. The
// squares (and, in the backward, the per-channel terms) of the last `window`
// channels live in rings of rows that stay in cache.

template <typename Acc>
struct RowRing {
  Acc* data;
  int64_t rows;
  int64_t width;
  Acc* row(int64_t channel) const { return data + (channel % rows) * width; }
};

// out[i] = sum over channels [first, last] of ring rows, at column i.
template <typename Acc>
AK_CPU_INLINE void sum_ring_rows(const RowRing<Acc>& ring, int64_t first, int64_t last,
                                 Acc* __restrict__ out) {
  const Acc* __restrict__ head = ring.row(first);
  for (int64_t i = 0; i < ring.width; ++i) {
    out[i] = head[i];
  }
  for (int64_t j = first + 1; j <= last; ++j) {
    const Acc* __restrict__ row = ring.row(j);
    for (int64_t i = 0; i < ring.width; ++i) {
      out[i] += row[i];
    }
  }
}

template <typename T, typename Acc>
AK_CPU_INLINE void load_square_row(const T* __restrict__ x, Acc* __restrict__ out,
                                   int64_t width) {
  for (int64_t i = 0; i < width; ++i) {
    const Acc v = static_cast<Acc>(x[i]);
    out[i] = v * v;
  }
}

// `x`, `y` point at channel 0 of the chunk; rows are `pixels` apart.
template <Beta kBeta, typename T, typename Acc>
AK_CPU_INLINE void lrn_forward_nchw_chunk(const T* __restrict__ x, T* __restrict__ y,
                                                int64_t pixels, int64_t width,
                                                const LrnCoefficients<Acc>& co,
                                                Scratch<Acc>& scratch) {
  const int64_t window = co.lo + co.hi + 1;
  const RowRing<Acc> squares{scratch.array(0), window, width};
  Acc* sums = scratch.array(1);
  int64_t loaded = 0;  // squares of channels [0, loaded) have been computed
  for (int64_t c = 0; c < co.channels; ++c) {
    const int64_t last = std::min(c + co.hi, co.channels - 1);
    for (; loaded <= last; ++loaded) {
      load_square_row(x + loaded * pixels, squares.row(loaded), width);
    }
    sum_ring_rows(squares, std::max<int64_t>(c - co.lo, 0), last, sums);
    const T* __restrict__ xr = x + c * pixels;
    T* __restrict__ yr = y + c * pixels;
    for (int64_t i = 0; i < width; ++i) {
      const auto p = scale_powers<kBeta>(co.k + co.alpha_over_size * sums[i], co.beta);
      yr[i] = static_cast<T>(static_cast<Acc>(xr[i]) * p.pow_neg_beta);
    }
  }
}

// Channel c' contributes g*y/S to the gradient of every channel in its window,
// so the gradient of channel c is complete once c' = c + lo is done: the loop
// runs the per-channel terms `lo` channels ahead of the gradient rows.
template <Beta kBeta, typename T, typename Acc>
AK_CPU_INLINE void lrn_backward_nchw_chunk(const T* __restrict__ grad_y,
                                                 const T* __restrict__ x, const T* __restrict__ y,
                                                 T* __restrict__ grad_x, int64_t pixels,
                                                 int64_t width, const LrnCoefficients<Acc>& co,
                                                 Scratch<Acc>& scratch) {
  const int64_t window = co.lo + co.hi + 1;
  const RowRing<Acc> squares{scratch.array(0), window, width};
  const RowRing<Acc> g_over_s{scratch.array(1), window, width};  // g * y / S
  const RowRing<Acc> g_pow{scratch.array(2), window, width};     // g * S^-beta
  Acc* sums = scratch.array(3);
  int64_t loaded = 0;
  for (int64_t ahead = 0; ahead < co.channels + co.lo; ++ahead) {
    if (ahead < co.channels) {
      const int64_t last = std::min(ahead + co.hi, co.channels - 1);
      for (; loaded <= last; ++loaded) {
        load_square_row(x + loaded * pixels, squares.row(loaded), width);
      }
      sum_ring_rows(squares, std::max<int64_t>(ahead - co.lo, 0), last, sums);
      const T* __restrict__ gr = grad_y + ahead * pixels;
      const T* __restrict__ yr = y + ahead * pixels;
      Acc* __restrict__ t = g_over_s.row(ahead);
      Acc* __restrict__ gp = g_pow.row(ahead);
      for (int64_t i = 0; i < width; ++i) {
        const auto p = scale_powers<kBeta>(co.k + co.alpha_over_size * sums[i], co.beta);
        const Acc g = static_cast<Acc>(gr[i]);
        t[i] = g * static_cast<Acc>(yr[i]) * p.inverse;
        gp[i] = g * p.pow_neg_beta;
      }
    }
    const int64_t c = ahead - co.lo;
    if (c < 0) {
      continue;
    }
    sum_ring_rows(g_over_s, std::max<int64_t>(c - co.hi, 0), std::min(ahead, co.channels - 1),
                  sums);
    const Acc* __restrict__ gp = g_pow.row(c);
    const T* __restrict__ xr = x + c * pixels;
    T* __restrict__ gxr = grad_x + c * pixels;
    for (int64_t i = 0; i < width; ++i) {
      gxr[i] = static_cast<T>(gp[i] - static_cast<Acc>(xr[i]) * (co.grad_coef * sums[i]));
    }
  }
}

// ---- channels_last (N, pixels, C): vectors run along the channels ----------

// out[c] = sum_{d < window} padded[c + d]: with the values placed at
// padded[offset + c] and zeros around them, each window sum is `window`
// shifted contiguous loads.
template <typename Acc>
AK_CPU_INLINE void window_sums_padded(const Acc* __restrict__ padded, Acc* __restrict__ out,
                                      int64_t channels, int64_t window) {
  for (int64_t c = 0; c < channels; ++c) {
    out[c] = padded[c];
  }
  for (int64_t d = 1; d < window; ++d) {
    const Acc* __restrict__ shifted = padded + d;
    for (int64_t c = 0; c < channels; ++c) {
      out[c] += shifted[c];
    }
  }
}

template <typename T, typename Acc>
AK_CPU_INLINE void load_squares_padded(const T* __restrict__ x, int64_t channels, int64_t lo,
                                       int64_t window, Acc* __restrict__ padded) {
  std::fill(padded, padded + channels + window - 1, Acc(0));
  for (int64_t c = 0; c < channels; ++c) {
    const Acc v = static_cast<Acc>(x[c]);
    padded[lo + c] = v * v;
  }
}

template <Beta kBeta, typename T, typename Acc>
AK_CPU_INLINE void lrn_forward_nhwc_pixel(const T* __restrict__ x, T* __restrict__ y,
                                                const LrnCoefficients<Acc>& co,
                                                Scratch<Acc>& scratch) {
  const int64_t window = co.lo + co.hi + 1;
  Acc* padded = scratch.array(0);  // C + window - 1 entries
  Acc* sums = scratch.array(1);
  load_squares_padded(x, co.channels, co.lo, window, padded);
  window_sums_padded(padded, sums, co.channels, window);
  for (int64_t c = 0; c < co.channels; ++c) {
    const auto p = scale_powers<kBeta>(co.k + co.alpha_over_size * sums[c], co.beta);
    y[c] = static_cast<T>(static_cast<Acc>(x[c]) * p.pow_neg_beta);
  }
}

template <Beta kBeta, typename T, typename Acc>
AK_CPU_INLINE void lrn_backward_nhwc_pixel(const T* __restrict__ grad_y,
                                                 const T* __restrict__ x, const T* __restrict__ y,
                                                 T* __restrict__ grad_x,
                                                 const LrnCoefficients<Acc>& co,
                                                 Scratch<Acc>& scratch) {
  const int64_t C = co.channels;
  const int64_t window = co.lo + co.hi + 1;
  Acc* padded = scratch.array(0);
  Acc* sums = scratch.array(1);
  Acc* g_pow = scratch.array(2);
  load_squares_padded(x, C, co.lo, window, padded);
  window_sums_padded(padded, sums, C, window);
  // `padded` now takes g*y/S, placed so that the window [c - hi, c + lo] starts at c.
  for (int64_t c = 0; c < C; ++c) {
    const auto p = scale_powers<kBeta>(co.k + co.alpha_over_size * sums[c], co.beta);
    const Acc g = static_cast<Acc>(grad_y[c]);
    g_pow[c] = g * p.pow_neg_beta;
    sums[c] = g * static_cast<Acc>(y[c]) * p.inverse;
  }
  std::fill(padded, padded + C + window - 1, Acc(0));
  std::copy(sums, sums + C, padded + co.hi);
  window_sums_padded(padded, sums, C, window);
  for (int64_t c = 0; c < C; ++c) {
    grad_x[c] = static_cast<T>(g_pow[c] - static_cast<Acc>(x[c]) * (co.grad_coef * sums[c]));
  }
}

// ---- drivers ----------------------------------------------------------------

// Pixels per work item of the contiguous layout: long rows stream well, but
// small images get shorter chunks so that every thread has work.
int64_t nchw_chunk_width(const LrnExtent& e) {
  constexpr int64_t kMaxWidth = 1024;
  constexpr int64_t kMinWidth = 64;
  const int64_t wanted_items = 4 * at::get_num_threads();
  int64_t width = std::min(kMaxWidth, e.pixels);
  while (width > kMinWidth && e.batch * ((e.pixels + width - 1) / width) < wanted_items) {
    width = std::max(kMinWidth, width / 2);
  }
  return width;
}

// Runs body(offset, width, scratch) over the (image, pixel chunk) items of the
// contiguous layout in parallel; `offset` is the chunk's first element. `body`
// must be an AK_CPU_INLINE_LAMBDA so it is compiled for each instruction set.
template <typename Acc, typename Body>
void for_each_nchw_chunk(const LrnExtent& e, int64_t window, int arrays, const Body& body) {
  const int64_t width = nchw_chunk_width(e);
  const int64_t chunks_per_image = (e.pixels + width - 1) / width;
  at::parallel_for(0, e.batch * chunks_per_image, 1, [&](int64_t begin, int64_t end) {
    // Rings of `window` rows; the last array holds one row of window sums.
    Scratch<Acc> scratch(window, width, arrays);
    cpu::run_with_cpu_capability([&]() AK_CPU_INLINE_LAMBDA {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / chunks_per_image;
        const int64_t p0 = (item % chunks_per_image) * width;
        body(n * e.channels * e.pixels + p0, std::min(width, e.pixels - p0), scratch);
      }
    });
  });
}

// Runs body(offset, scratch) for every pixel of the channels_last layout in parallel.
template <typename Acc, typename Body>
void for_each_nhwc_pixel(const LrnExtent& e, int64_t window, int arrays, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(e.channels, 1));
  at::parallel_for(0, e.batch * e.pixels, grain, [&](int64_t begin, int64_t end) {
    Scratch<Acc> scratch(e.channels + window, 1, arrays);
    cpu::run_with_cpu_capability([&]() AK_CPU_INLINE_LAMBDA {
      for (int64_t pixel = begin; pixel < end; ++pixel) {
        body(pixel * e.channels, scratch);
      }
    });
  });
}

at::Tensor lrn_forward_cpu(const at::Tensor& x_in, int64_t size, double alpha, double beta,
                           double k) {
  check_lrn_arguments(x_in, size, alpha, beta, k);
  const at::MemoryFormat format = lrn_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  at::Tensor y = cpu::empty_output(x.sizes(), x.options(), format);
  if (y.numel() == 0) {
    return y;
  }
  if (lrn_is_identity(beta)) {
    return y.copy_(x);
  }
  const LrnExtent e = lrn_extent(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_forward_cpu",
                                  [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto co = make_coefficients<Acc>(e.channels, size, alpha, beta, k);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    dispatch_beta(beta, [&](auto kind) {
      constexpr Beta kBeta = decltype(kind)::value;
      if (format == at::MemoryFormat::Contiguous) {
        for_each_nchw_chunk<Acc>(e, co.lo + co.hi + 1, 2,
                                 [&](int64_t offset, int64_t width, Scratch<Acc>& s) AK_CPU_INLINE_LAMBDA {
          lrn_forward_nchw_chunk<kBeta>(xp + offset, yp + offset, e.pixels, width, co, s);
        });
      } else {
        for_each_nhwc_pixel<Acc>(e, co.lo + co.hi + 1, 2, [&](int64_t offset, Scratch<Acc>& s) AK_CPU_INLINE_LAMBDA {
          lrn_forward_nhwc_pixel<kBeta>(xp + offset, yp + offset, co, s);
        });
      }
    });
  });
  return y;
}

at::Tensor lrn_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                            const at::Tensor& y_in, int64_t size, double alpha, double beta,
                            double k) {
  check_lrn_arguments(x_in, size, alpha, beta, k);
  check_lrn_backward_arguments(grad_y_in, x_in, y_in);
  const at::MemoryFormat format = lrn_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor y = y_in.contiguous(format);
  const at::Tensor grad_y = grad_y_in.contiguous(format);
  at::Tensor grad_x = cpu::empty_output(x.sizes(), x.options(), format);
  if (grad_x.numel() == 0) {
    return grad_x;
  }
  if (lrn_is_identity(beta)) {
    // Below autograd: a caller's x may require grad, and out= ops refuse that.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return at::add_out(grad_x, grad_y, x, /*alpha=*/0);
  }
  const LrnExtent e = lrn_extent(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward_cpu",
                                  [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto co = make_coefficients<Acc>(e.channels, size, alpha, beta, k);
    const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    dispatch_beta(beta, [&](auto kind) {
      constexpr Beta kBeta = decltype(kind)::value;
      if (format == at::MemoryFormat::Contiguous) {
        for_each_nchw_chunk<Acc>(e, co.lo + co.hi + 1, 4,
                                 [&](int64_t offset, int64_t width, Scratch<Acc>& s) AK_CPU_INLINE_LAMBDA {
          lrn_backward_nchw_chunk<kBeta>(gp + offset, xp + offset, yp + offset, gxp + offset,
                                         e.pixels, width, co, s);
        });
      } else {
        for_each_nhwc_pixel<Acc>(e, co.lo + co.hi + 1, 3, [&](int64_t offset, Scratch<Acc>& s) AK_CPU_INLINE_LAMBDA {
          lrn_backward_nhwc_pixel<kBeta>(gp + offset, xp + offset, yp + offset, gxp + offset,
                                         co, s);
        });
      }
    });
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("lrn", &lrn_forward_cpu);
  m.impl("lrn_backward", &lrn_backward_cpu);
}

}  // namespace alexnet_kernels
