// The schema of every alexnet_kernels operator, in one place: registered by
// csrc/registry.cpp for the library, and by tests/cuda_emu/emulated_ops.cpp for
// the same CUDA kernels run on the CPU (so the two can never drift apart).
#pragma once

#include <array>

namespace alexnet_kernels::schemas {

// Cross-channel local response normalisation, with the semantics of
// torch.nn.functional.local_response_norm (alpha is divided by size).
inline constexpr const char* kLrn =
    "lrn(Tensor x, int size, float alpha, float beta, float k) -> Tensor";
inline constexpr const char* kLrnBackward =
    "lrn_backward(Tensor grad_y, Tensor x, Tensor y, int size, float alpha, float beta, "
    "float k) -> Tensor";

// 2-D max pooling of a 4-D (N, C, H, W) tensor with the window rules of
// torch.nn.functional.max_pool2d. Returns (y, argmax): argmax holds, per
// output, the offset kh * kernel_w + kw of the maximum inside its window
// (uint8 for windows of up to 256 positions, int32 beyond) and is all the
// backward needs.
inline constexpr const char* kMaxPool2d =
    "max_pool2d(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
    "bool ceil_mode) -> (Tensor, Tensor)";
// max_pool2d's y alone, for inference: no argmax is computed or stored.
inline constexpr const char* kMaxPool2dValues =
    "max_pool2d_values(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, "
    "int[2] dilation, bool ceil_mode) -> Tensor";
inline constexpr const char* kMaxPool2dBackward =
    "max_pool2d_backward(Tensor grad_y, Tensor argmax, SymInt[4] input_size, "
    "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) "
    "-> Tensor";

// Dropout with 0 < p < 1: y = x * mask / (1 - p), the mask drawn from
// Philox4x32-10 keyed by seed_offset = (seed, offset), an int64 tensor on the
// CPU or on x's device (convention in csrc/kernels/philox.cuh). The mask is never stored: the
// backward is this op applied to grad_y with the same seed_offset.
inline constexpr const char* kDropout = "dropout(Tensor x, Tensor seed_offset, float p) -> Tensor";

// relu(conv2d(x, weight) + bias) for 4-D x, with F.conv2d's conventions
// (symmetric padding; 'same' and asymmetric padding are resolved in Python).
// The backward takes the output y (its ReLU mask is y > 0) and returns
// (grad_x, grad_weight, grad_bias); a gradient not asked for in output_mask
// is an empty tensor.
inline constexpr const char* kConv2dRelu =
    "conv2d_relu(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
    "int[2] dilation, int groups) -> Tensor";
inline constexpr const char* kConv2dReluBackward =
    "conv2d_relu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor y, int[2] stride, "
    "int[2] padding, int[2] dilation, int groups, bool[3] output_mask) "
    "-> (Tensor, Tensor, Tensor)";

// Every operator, the list both registrations loop over.
inline constexpr std::array kAll = {kLrn,      kLrnBackward, kMaxPool2d,  kMaxPool2dValues,
                                    kMaxPool2dBackward, kDropout,     kConv2dRelu,
                                    kConv2dReluBackward};
// The operators without a CUDA kernel (max_pool2d_values is CPU-only: on CUDA
// the Python front end calls max_pool2d), which the emulated library leaves out.
inline constexpr std::array kWithoutCudaKernel = {kMaxPool2dValues};

}  // namespace alexnet_kernels::schemas
