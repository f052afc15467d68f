// CUDA launchers for the fused conv2d + bias + ReLU: device checks, device
// guard, current stream and the launch check around the shared host glue
// (conv2d_relu_launch.h); the kernels themselves are in
// csrc/kernels/conv2d_relu.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/checks.h"
#include "cuda/conv2d_relu_launch.h"

namespace alexnet_kernels {
namespace {

struct ComputeCapability {
  int major;
  int minor;
};

ComputeCapability compute_capability(const at::Tensor& x) {
  ComputeCapability c{};
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&c.major, cudaDevAttrComputeCapabilityMajor,
                                        x.device().index()));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&c.minor, cudaDevAttrComputeCapabilityMinor,
                                        x.device().index()));
  return c;
}

// fp16 / bf16 run on mma.m16n8k16 tensor cores, which need sm_80 or newer
// (fp32 falls back from TF32 to FFMA below sm_80, as PyTorch's TF32 setting does).
void check_tensor_cores(const char* op, const at::Tensor& x, ComputeCapability c) {
  if (x.scalar_type() != at::kHalf && x.scalar_type() != at::kBFloat16) {
    return;
  }
  TORCH_CHECK(c.major >= 8, op, " (CUDA): ", x.scalar_type(),
              " needs tensor cores of compute capability 8.0 or newer, got ", c.major, ".",
              c.minor, "; use backend='torch' or float32 on this GPU");
}

// The pipelined forward's ring is kernels::kFpropSmemBytes (48 KiB) of dynamic shared
// memory. An sm_90 image also holds 1 KiB of static shared memory, and the default
// limit for the dynamic part is 48 KiB minus the static part, so the kernel opts in.
void allow_pipelined_forward_shared_memory(const at::Tensor& x) {
  if (x.scalar_type() == at::kHalf) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(&kernels::conv2d_relu_forward_nhwc_kernel<__half>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        kernels::kFpropSmemBytes));
  } else if (x.scalar_type() == at::kBFloat16) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(&kernels::conv2d_relu_forward_nhwc_kernel<__nv_bfloat16>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        kernels::kFpropSmemBytes));
  }
}

at::Tensor conv2d_relu_cuda(const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_on_cuda("conv2d_relu", "x", x);
  const c10::cuda::CUDAGuard guard(x.device());
  const ComputeCapability capability = compute_capability(x);
  check_tensor_cores("conv2d_relu", x, capability);
  allow_pipelined_forward_shared_memory(x);
  return run_conv2d_relu_forward(x, weight, bias, stride, padding, dilation, groups,
                                 conv_uses_tf32(x, capability.major),
                                 c10::cuda::getCurrentCUDAStream(),
                                 [] { C10_CUDA_KERNEL_LAUNCH_CHECK(); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_relu_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  check_on_cuda("conv2d_relu_backward", "x", x);
  const c10::cuda::CUDAGuard guard(x.device());
  const ComputeCapability capability = compute_capability(x);
  check_tensor_cores("conv2d_relu_backward", x, capability);
  return run_conv2d_relu_backward(grad_y, x, weight, y, stride, padding, dilation, groups,
                                  output_mask, conv_uses_tf32(x, capability.major),
                                  c10::cuda::getCurrentCUDAStream(),
                                  [] { C10_CUDA_KERNEL_LAUNCH_CHECK(); });
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("conv2d_relu", &conv2d_relu_cuda);
  m.impl("conv2d_relu_backward", &conv2d_relu_backward_cuda);
}

}  // namespace alexnet_kernels
