// Internal helpers shared by the CUDA kernels.
#pragma once

#include <cuda_runtime.h>

#include "core/error.hpp"
#include "edgert/edgert.h"

namespace edgert::cuda_detail {

// Turns a CUDA error into EDGERT_ERR_CUDA (or BACKEND_UNAVAILABLE for a missing
// driver/device) with the call site in the message.
inline edgert_status check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return EDGERT_OK;
  const edgert_status st = (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice)
                               ? EDGERT_ERR_BACKEND_UNAVAILABLE
                               : EDGERT_ERR_CUDA;
  return edgert::detail::fail(st, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Stream-ordered scratch memory for the kernels, from a memory pool that edgert owns (one per device, created on
// first use, never trimmed). The device's default pool returns freed memory to the driver at every
// synchronisation (its release threshold is 0), so a synchronous call that took its scratch from it paid a fresh
// physical allocation each time (about 120 us per sparse_patch on an H200); raising that threshold instead
// would change the default pool for the whole host application. Free with cudaFreeAsync.
cudaError_t scratch_alloc(void** ptr, size_t bytes, cudaStream_t stream);

inline unsigned blocks_for(long long n, int threads) {
  long long b = (n + threads - 1) / threads;
  if (b > 65535LL * 32) b = 65535LL * 32;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

}  // namespace edgert::cuda_detail
