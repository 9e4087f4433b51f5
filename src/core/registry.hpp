// Internal: the backend registry. Each compiled-in backend contributes one
// table of entry points with a uniform signature per hot path (every entry
// takes a stream; the CPU ignores it); the C API (core/backend.cpp) resolves
// EDGERT_BACKEND_AUTO|CPU|CUDA to a table and calls through it.
//
// The CPU table is defined by the core. The CUDA table is defined by the CUDA
// library (src/cuda/backend.cu) when it is linked in and by core/cuda_stub.cpp
// (which returns null) otherwise, so that the core never depends on the CUDA
// runtime and a CPU-only build links without it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgert/edgert.h"
#include "edgert/kernels.hpp"

namespace edgert::detail {

// Where a buffer lives, as a device backend sees it.
enum class Memory : int {
  kHost,    // pageable host memory, unknown to the device runtime
  kPinned,  // page-locked host memory (host- and device-accessible)
  kDevice,  // device memory (device-only)
  kManaged  // unified memory (host- and device-accessible)
};

struct BackendTable {
  const char* name;  // "CPU", "CUDA"

  // Fills *info (the caller zeroed it). Slow (may query device properties): not for hot paths.
  void (*query)(edgert_backend_info* info);
  // Cheap: 1 if the backend can run now (cached after the first call).
  int (*usable)(void);

  // Device backends only (null for the CPU): classifies a non-null pointer and,
  // for kDevice/kManaged, writes its device ordinal.
  Memory (*locate)(const void* ptr, int* device);
  // Device backends only: the calling thread's current device, or -1.
  int (*current_device)(void);
  // Device backends only: 1 if the current device can access pageable host memory (HMM/ATS).
  int (*pageable_access)(void);

  edgert_status (*sparse_patch)(void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                                edgert_dtype index_dtype, const void* values, edgert_dtype values_dtype, size_t count,
                                edgert_patch_mode mode, void* stream);
  edgert_status (*sparse_gather)(const void* weights, edgert_dtype weights_dtype, size_t n_weights,
                                 const void* indices, edgert_dtype index_dtype, size_t count, void* out,
                                 edgert_dtype out_dtype, void* stream);
  edgert_status (*adaptive_conv)(const float* x, const float* kernels, const float* bias, int64_t n, int64_t c_in,
                                 int64_t height, int64_t width, int64_t f_out, int64_t patch, int32_t activation,
                                 float* out, void* stream);
  edgert_status (*block_average)(const float* grad, int64_t n, int64_t c, int64_t height, int64_t width,
                                 int64_t block, float* out, void* stream);
  edgert_status (*gaussian_denoise)(const cfloat* z, const float* var, int64_t n, int32_t modulation, cfloat* mean,
                                    float* var_out, void* stream);
};

// The CUDA table when the CUDA library is linked in, else null.
const BackendTable* cuda_backend();

// The table compiled in for a concrete backend (CPU always), or null.
const BackendTable* find_backend(edgert_backend backend);

// Resolves `requested` (CPU, CUDA or AUTO) for the buffers ptrs[0..n) (nulls
// are skipped; names[i] labels ptrs[i] in messages) and returns the table to
// run on. AUTO picks CUDA when it is compiled in, usable, and the buffers are
// device (or managed) memory, else the CPU. An explicit CUDA request checks
// that every buffer is device-accessible and on the current device. Failures
// (unknown backend, unavailable backend, mixed or misplaced buffers) set the
// message, prefixed with `op`, and return null with *status set.
const BackendTable* select_backend(edgert_backend requested, const void* const* ptrs, const char* const* names,
                                   size_t n, const char* op, edgert_status* status, edgert_backend* chosen);

}  // namespace edgert::detail
