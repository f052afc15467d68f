// Theoretical occupancy from CUDA's host-side calculator (cuda_occupancy.h),
// which needs no GPU. Reads lines "major minor block_threads registers
// static_smem dynamic_smem" and prints "blocks_per_sm occupancy_percent".
#include <cuda_occupancy.h>

#include <cstdio>

namespace {

// Per-architecture limits from the CUDA programming guide's compute
// capability tables (threads, registers and shared memory per SM).
cudaOccDeviceProp device_properties(int major, int minor) {
  cudaOccDeviceProp prop{};
  prop.computeMajor = major;
  prop.computeMinor = minor;
  prop.maxThreadsPerBlock = 1024;
  prop.warpSize = 32;
  prop.numSms = 1;  // occupancy is per SM; the count only matters for whole-device queries
  prop.regsPerBlock = 65536;
  prop.regsPerMultiprocessor = 65536;
  prop.sharedMemPerBlock = 48 * 1024;
  prop.reservedSharedMemPerBlock = 1024;
  const int arch = major * 10 + minor;
  if (arch == 75) {
    prop.maxThreadsPerMultiprocessor = 1024;
    prop.sharedMemPerMultiprocessor = 64 * 1024;
    prop.sharedMemPerBlockOptin = 64 * 1024;
    prop.reservedSharedMemPerBlock = 0;
  } else if (arch == 80) {
    prop.maxThreadsPerMultiprocessor = 2048;
    prop.sharedMemPerMultiprocessor = 164 * 1024;
    prop.sharedMemPerBlockOptin = 163 * 1024;
  } else if (arch == 86 || arch == 89) {
    prop.maxThreadsPerMultiprocessor = 1536;
    prop.sharedMemPerMultiprocessor = 100 * 1024;
    prop.sharedMemPerBlockOptin = 99 * 1024;
  } else {  // 9.0 and later
    prop.maxThreadsPerMultiprocessor = 2048;
    prop.sharedMemPerMultiprocessor = 228 * 1024;
    prop.sharedMemPerBlockOptin = 227 * 1024;
  }
  return prop;
}

}  // namespace

int main() {
  int major, minor, threads, registers;
  long static_smem, dynamic_smem;
  while (std::scanf("%d %d %d %d %ld %ld", &major, &minor, &threads, &registers, &static_smem,
                    &dynamic_smem) == 6) {
    const cudaOccDeviceProp prop = device_properties(major, minor);
    cudaOccFuncAttributes attributes{};
    attributes.maxThreadsPerBlock = 1024;
    attributes.numRegs = registers;
    attributes.sharedSizeBytes = static_cast<size_t>(static_smem);
    attributes.partitionedGCConfig = PARTITIONED_GC_OFF;
    // Past the default 48 KiB a launcher must opt in (cudaFuncSetAttribute with
    // cudaFuncAttributeMaxDynamicSharedMemorySize), as the pipelined convolution does.
    const bool opt_in = static_smem + dynamic_smem > 48 * 1024;
    attributes.shmemLimitConfig = opt_in ? FUNC_SHMEM_LIMIT_OPTIN : FUNC_SHMEM_LIMIT_DEFAULT;
    attributes.maxDynamicSharedSizeBytes =
        opt_in ? static_cast<size_t>(dynamic_smem) : 48 * 1024;
    cudaOccDeviceState state{};
    cudaOccResult result{};
    const cudaOccError status = cudaOccMaxActiveBlocksPerMultiprocessor(
        &result, &prop, &attributes, &state, threads, static_cast<size_t>(dynamic_smem));
    if (status != CUDA_OCC_SUCCESS) {
      std::printf("error %d\n", static_cast<int>(status));
      continue;
    }
    const double occupancy = 100.0 * result.activeBlocksPerMultiprocessor * threads /
                             prop.maxThreadsPerMultiprocessor;
    std::printf("%d %.0f\n", result.activeBlocksPerMultiprocessor, occupancy);
  }
  return 0;
}
