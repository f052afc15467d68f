// Detection and override of the instruction set the CPU kernels run with.
#include "cpu/vectorize.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>

namespace alexnet_kernels::cpu {
namespace {

CpuCapability parse(const std::string& name) {
  if (name == "default") return CpuCapability::kDefault;
  if (name == "avx2") return CpuCapability::kAvx2;
  if (name == "avx512") return CpuCapability::kAvx512;
  TORCH_CHECK(false, "alexnet_kernels: CPU capability must be 'default', 'avx2' or 'avx512', got '",
              name, "'");
}

CpuCapability from_environment() {
  const char* forced = std::getenv("ALEXNET_KERNELS_CPU_CAPABILITY");
  const CpuCapability detected = detected_cpu_capability();
  if (forced == nullptr || *forced == '\0') {
    return detected;
  }
  const CpuCapability wanted = parse(forced);
  // Asking for more than the CPU has would crash with an illegal instruction.
  return static_cast<int>(wanted) < static_cast<int>(detected) ? wanted : detected;
}

std::atomic<int>& selected() {
  static std::atomic<int> value{static_cast<int>(from_environment())};
  return value;
}

}  // namespace

CpuCapability detected_cpu_capability() {
#if AK_CPU_HAS_ISA_VARIANTS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return CpuCapability::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return CpuCapability::kAvx2;
  }
#endif
  return CpuCapability::kDefault;
}

CpuCapability cpu_capability() { return static_cast<CpuCapability>(selected().load()); }

const char* cpu_capability_name(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::kAvx512:
      return "avx512";
    case CpuCapability::kAvx2:
      return "avx2";
    case CpuCapability::kDefault:
      break;
  }
  return "default";
}

void set_cpu_capability(const std::string& name) {
  const CpuCapability wanted = parse(name);
  const CpuCapability detected = detected_cpu_capability();
  TORCH_CHECK(static_cast<int>(wanted) <= static_cast<int>(detected),
              "alexnet_kernels: this CPU supports at most '", cpu_capability_name(detected),
              "', cannot run the '", name, "' kernels");
  selected().store(static_cast<int>(wanted));
}

}  // namespace alexnet_kernels::cpu
