// The CUDA entry of the backend registry (core/registry.hpp): the probe, the
// pointer classification behind EDGERT_BACKEND_AUTO, and the kernels.
#include <cuda_runtime.h>

#include <cstdio>

#include "core/registry.hpp"
#include "edgert/kernels.hpp"

namespace edgert::detail {
namespace {

void cuda_query(edgert_backend_info* info) {
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

// Whether a driver and a device exist does not change while the process runs.
int cuda_usable() {
  static const int usable = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return count > 0 ? 1 : 0;
  }();
  return usable;
}

Memory cuda_locate(const void* ptr, int* device) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();  // (runtimes before 11.0 fail for unregistered host memory)
    return Memory::kHost;
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice:
      *device = attr.device;
      return Memory::kDevice;
    case cudaMemoryTypeManaged:
      *device = attr.device;
      return Memory::kManaged;
    case cudaMemoryTypeHost: return Memory::kPinned;
    default: return Memory::kHost;
  }
}

int cuda_current_device() {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return device;
}

int cuda_pageable_access() {
  const int device = cuda_current_device();
  int value = 0;
  if (device < 0 || cudaDeviceGetAttribute(&value, cudaDevAttrPageableMemoryAccess, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return value;
}

const BackendTable kCuda = {
    "CUDA",
    &cuda_query,
    &cuda_usable,
    &cuda_locate,
    &cuda_current_device,
    &cuda_pageable_access,
    &edgert::cuda::sparse_patch,
    &edgert::cuda::sparse_gather,
    &edgert::cuda::adaptive_conv,
    &edgert::cuda::block_average,
    &edgert::cuda::gaussian_denoise,
};

}  // namespace

const BackendTable* cuda_backend() { return &kCuda; }

}  // namespace edgert::detail
