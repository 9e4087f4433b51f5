#include <cuda_runtime.h>

#include <cstdio>

#include "core/backend_probe.hpp"

extern "C" void edgert_detail_cuda_query(edgert_backend_info* info) {
  info->compiled = 1;
  info->num_threads = 0;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    info->usable = 0;
    info->device_count = 0;
    std::snprintf(info->detail, sizeof(info->detail), "compiled (runtime %d), unusable: %s", CUDART_VERSION,
                  cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky-free error so later queries start clean
    return;
  }
  info->device_count = count;
  info->usable = count > 0;
  cudaDeviceProp prop{};
  if (count > 0 && cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    std::snprintf(info->detail, sizeof(info->detail), "runtime %d, device 0: %s (sm_%d%d, %d SMs, %.1f GiB)",
                  CUDART_VERSION, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                  static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  } else {
    std::snprintf(info->detail, sizeof(info->detail), "runtime %d, %d devices", CUDART_VERSION, count);
  }
}
