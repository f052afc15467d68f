// Whether the CPU conv2d_relu runs its ReLU inside oneDNN's convolution (see
// csrc/cpu/conv2d_relu.cpp), for the Python side: bug reports and the test that
// forces the unfused path.
#pragma once

#include <string>

namespace alexnet_kernels::cpu {

// Empty when oneDNN's fused convolution + ReLU can be used, else why not (the
// op is missing from this torch, or its schema is not the one the call is
// written for).
std::string onednn_fusion_unavailable_reason();

// The fused path is used only while enabled (the default) and available.
bool onednn_fusion_enabled();
void set_onednn_fusion_enabled(bool enabled);

}  // namespace alexnet_kernels::cpu
