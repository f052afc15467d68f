// Fused conv2d + bias + ReLU on the CPU.
//
// The convolution itself is PyTorch's CPU convolution (oneDNN): it already runs
// near the machine's peak on AlexNet's shapes, where a hand-written im2col +
// GEMM measured 0.3-0.6x of it. What the fusion saves on the CPU is memory
// traffic and allocation: for float32 and bfloat16 the ReLU runs as oneDNN's
// post-op inside the convolution (PyTorch's mkldnn::_convolution_pointwise,
// 5-18% faster than convolving and then applying ReLU, bit-identical), else
// in place on the convolution's output; eager F.relu allocates and writes a
// second activation-sized tensor. The backward masks grad_y as eager's ReLU
// backward does (zero where y <= 0, so a NaN passes; csrc/cpu/relu_mask.h), then
// runs one convolution backward for the gradients that are asked for.
//
// oneDNN's ReLU post-op turns a NaN pre-activation into 0, where F.relu keeps
// the NaN. A NaN needs a NaN or infinite operand or a sum that overflows, so
// the fused path runs only when every operand is finite and the largest sum
// the convolution can form, K * max|x| * max|w| + max|b|, stays below the
// float maximum; else the convolution runs unfused and ReLU keeps NaN. The
// check reads x once (one reduction, no allocation); max|w| and max|b| are
// remembered per weight version (csrc/cpu/max_abs_cache.h), since reading the
// weights on every call cost a quarter of a batch-1 forward. Autotuning
// (backend="auto") weighs the check against the unfused path per shape.
//
// mkldnn::_convolution_pointwise is a private op called by position, so its
// schema is checked once when it is looked up; any other schema (another torch
// release) falls back to the unfused path.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/relu.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "conv2d_relu.h"
#include "cpu/conv2d_relu_fusion.h"
#include "cpu/max_abs_cache.h"
#include "cpu/relu_mask.h"

namespace alexnet_kernels {
namespace {

// The argument and return types of mkldnn::_convolution_pointwise that
// fused_convolution_relu() passes by position.
constexpr std::array<const char*, 10> kFusedArgumentTypes = {
    "Tensor", "Tensor", "Tensor?", "int[]", "int[]", "int[]", "int", "str", "Scalar?[]", "str?"};

struct FusedConvolution {
  std::optional<c10::OperatorHandle> op;
  std::string unavailable;  // why op is empty
};

FusedConvolution look_up_fused_convolution() {
  const auto op = c10::Dispatcher::singleton().findOp({"mkldnn::_convolution_pointwise", ""});
  if (!op.has_value()) {
    return {std::nullopt, "mkldnn::_convolution_pointwise is not in this torch build"};
  }
  const c10::FunctionSchema& schema = op->schema();
  bool matches = schema.arguments().size() == kFusedArgumentTypes.size() &&
                 schema.returns().size() == 1 && schema.returns()[0].type()->str() == "Tensor";
  for (size_t i = 0; matches && i < kFusedArgumentTypes.size(); ++i) {
    matches = schema.arguments()[i].type()->str() == kFusedArgumentTypes[i];
  }
  if (!matches) {
    return {std::nullopt, "mkldnn::_convolution_pointwise has an unexpected schema: " +
                              c10::toString(schema)};
  }
  return {op, ""};
}

const FusedConvolution& fused_convolution() {
  static const FusedConvolution fused = look_up_fused_convolution();
  return fused;
}

std::atomic<bool> fusion_enabled{true};

// Whether the convolution's pre-activation is certainly free of NaN, so that
// oneDNN's ReLU (NaN -> 0) equals F.relu (NaN stays) on it.
bool pre_activation_has_no_nan(const at::Tensor& x, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias) {
  // Sums of K products in float32 accumulators; the margin covers their rounding.
  constexpr double kLargestSafeSum = 0.5 * std::numeric_limits<float>::max();
  const double products = static_cast<double>(weight.size(1) * weight.size(2) * weight.size(3));
  // x is new on every call; the weight and bias change only with an optimizer step.
  const double bound = products * cpu::max_abs(x) * cpu::max_abs_cached(weight) +
                       (bias.has_value() && bias->defined() ? cpu::max_abs_cached(*bias) : 0.0);
  return bound < kLargestSafeSum;  // false for NaN and inf
}

at::Tensor fused_convolution_relu(const at::Tensor& x, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  // Called boxed: the op is registered by PyTorch's oneDNN integration, which
  // ships no C++ header for it. It reads the bias as if it were contiguous.
  c10::optional<at::Tensor> dense_bias;
  if (bias.has_value() && bias->defined()) {
    dense_bias = bias->contiguous();
  }
  torch::jit::Stack stack{x,
                          weight,
                          dense_bias,
                          padding.vec(),
                          stride.vec(),
                          dilation.vec(),
                          groups,
                          std::string("relu"),
                          c10::List<std::optional<c10::Scalar>>(),
                          c10::IValue()};
  fused_convolution().op->callBoxed(&stack);
  return std::move(stack.at(0)).toTensor();
}

// Whether oneDNN runs the fused op in `dtype` on this CPU: its bfloat16 path
// needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT and raises without them, where
// PyTorch's own convolution picks another kernel. Asked once per dtype, on a
// one-element convolution.
bool fused_dtype_supported(at::ScalarType dtype) {
  auto probe = [](at::ScalarType type) {
    const at::Tensor one = at::ones({1, 1, 1, 1}, at::TensorOptions().dtype(type));
    try {
      fused_convolution_relu(one, one, c10::nullopt, {1, 1}, {0, 0}, {1, 1}, 1);
      return true;
    } catch (const c10::Error&) {
      return false;
    }
  };
  static const bool float_supported = probe(at::kFloat);
  static const bool bfloat16_supported = probe(at::kBFloat16);
  return dtype == at::kFloat ? float_supported : bfloat16_supported;
}

bool can_fuse_in_onednn(const at::Tensor& x, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias) {
  return (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
         x.size(0) > 0 && fusion_enabled.load(std::memory_order_relaxed) &&
         fused_convolution().op.has_value() && fused_dtype_supported(x.scalar_type()) &&
         pre_activation_has_no_nan(x, weight, bias);
}

// Whether some output's window along one axis holds padding only (every tap
// o * stride - pad + k * dilation outside [0, input)): only possible with padding.
bool some_window_lies_in_padding(int64_t input, int64_t kernel, int64_t stride, int64_t pad,
                                 int64_t dilation) {
  if (pad == 0) {
    return false;  // tap 0 of every window is inside
  }
  const int64_t outputs = conv_output_size(input, kernel, stride, pad, dilation);
  for (int64_t o = 0; o < outputs; ++o) {
    bool inside = false;
    for (int64_t k = 0; k < kernel && !inside; ++k) {
      const int64_t i = o * stride - pad + k * dilation;
      inside = i >= 0 && i < input;
    }
    if (!inside) {
      return true;
    }
  }
  return false;
}

at::Tensor conv2d_relu_cpu(const at::Tensor& x_in, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding_in, at::IntArrayRef dilation,
                           int64_t groups) {
  check_conv2d_relu_arguments(x_in, weight, bias, stride, padding_in, dilation, groups);
  // oneDNN's convolution (behind F.conv2d too) crashes on some channels_last grouped
  // convolutions whose outputs include windows of padding only (seen with PyTorch
  // 2.14 on AVX2). Such a window is all zeros, so the padding is made real instead:
  // a copy of x, only in this rare geometry.
  at::Tensor x = x_in;
  std::array<int64_t, 2> padding{padding_in[0], padding_in[1]};
  if (some_window_lies_in_padding(x.size(2), weight.size(2), stride[0], padding[0],
                                  dilation[0]) ||
      some_window_lies_in_padding(x.size(3), weight.size(3), stride[1], padding[1],
                                  dilation[1])) {
    x = at::constant_pad_nd(x, {padding[1], padding[1], padding[0], padding[0]}, 0)
            .contiguous(x_in.suggest_memory_format());
    padding = {0, 0};
  }
  if (can_fuse_in_onednn(x, weight, bias)) {
    return fused_convolution_relu(x, weight, bias, stride, padding, dilation, groups);
  }
  at::Tensor y = at::convolution(x, weight, bias, stride, padding, dilation,
                                 /*transposed=*/false, /*output_padding=*/{0, 0}, groups);
  return at::relu_(y);  // clamp_min: NaN stays NaN, as in F.relu
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_relu_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  check_conv2d_relu_backward_arguments(grad_y, x, weight, y, stride, padding, dilation, groups);
  const at::Tensor masked = cpu::relu_backward(grad_y, y);
  const std::array<int64_t, 1> bias_sizes{weight.size(0)};
  auto [grad_x, grad_w, grad_b] = at::convolution_backward(
      masked, x, weight, bias_sizes, stride, padding, dilation, /*transposed=*/false,
      /*output_padding=*/{0, 0}, groups, output_mask);
  // Gradients not asked for come back as empty tensors (a defined return keeps
  // the schema free of optional outputs).
  auto or_empty = [&](const at::Tensor& t) {
    return t.defined() ? t : at::empty({0}, x.options());
  };
  return {or_empty(grad_x), or_empty(grad_w), or_empty(grad_b)};
}

}  // namespace

namespace cpu {

std::string onednn_fusion_unavailable_reason() { return fused_convolution().unavailable; }

bool onednn_fusion_enabled() { return fusion_enabled.load(); }

void set_onednn_fusion_enabled(bool enabled) { fusion_enabled.store(enabled); }

}  // namespace cpu

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("conv2d_relu", &conv2d_relu_cpu);
  m.impl("conv2d_relu_backward", &conv2d_relu_backward_cpu);
}

}  // namespace alexnet_kernels
