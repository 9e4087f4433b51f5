// The edgert-owned stream-ordered memory pools behind cuda_detail::scratch_alloc (common.cuh says why).
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "cuda/common.cuh"

namespace edgert::cuda_detail {
namespace {

// Pools live as long as the process: the scratch they hold is a few kilobytes per device.
cudaError_t pool_for(int device, cudaMemPool_t* out) {
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;
  std::lock_guard<std::mutex> lock(mutex);
  if (device < 0) return cudaErrorInvalidDevice;
  if (static_cast<size_t>(device) >= pools.size()) pools.resize(static_cast<size_t>(device) + 1, nullptr);
  if (pools[device] == nullptr) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    if (cudaError_t e = cudaMemPoolCreate(&pool, &props); e != cudaSuccess) return e;
    uint64_t keep_everything = UINT64_MAX;
    if (cudaError_t e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_everything);
        e != cudaSuccess) {
      cudaMemPoolDestroy(pool);
      return e;
    }
    pools[device] = pool;
  }
  *out = pools[device];
  return cudaSuccess;
}

}  // namespace

cudaError_t scratch_alloc(void** ptr, size_t bytes, cudaStream_t stream) {
  int device = -1;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  cudaMemPool_t pool = nullptr;
  if (cudaError_t e = pool_for(device, &pool); e != cudaSuccess) return e;
  return cudaMallocFromPoolAsync(ptr, bytes, pool, stream);
}

}  // namespace edgert::cuda_detail
