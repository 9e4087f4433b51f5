// The backend registry and the C API's hot-path entry points: each call
// resolves its backend (CPU, CUDA or AUTO) against the registry, then runs the
// kernel of the chosen table. Design notes in docs/design/runtime.md ("Backends").
#include <cstdio>
#include <cstring>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/registry.hpp"
#include "edgert/edgert.h"
#include "edgert/kernels.hpp"

static_assert(static_cast<int>(EDGERT_ACTIVATION_NONE) == edgert::kActNone, "activation codes differ");
static_assert(static_cast<int>(EDGERT_ACTIVATION_RELU) == edgert::kActRelu, "activation codes differ");
static_assert(sizeof(edgert::cfloat) == 2 * sizeof(float), "complex floats must be interleaved pairs");

namespace edgert::detail {
namespace {

void cpu_query(edgert_backend_info* info) {
  info->compiled = 1;
  info->usable = 1;
  info->device_count = 1;
  info->num_threads = max_threads();
#if defined(EDGERT_WITH_OPENMP)
  std::snprintf(info->detail, sizeof(info->detail), "openmp, %d threads", info->num_threads);
#else
  std::snprintf(info->detail, sizeof(info->detail), "serial (built without OpenMP)");
#endif
}

int cpu_usable() { return 1; }

edgert_status cpu_sparse_patch(void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                               edgert_dtype index_dtype, const void* values, edgert_dtype values_dtype, size_t count,
                               edgert_patch_mode mode, void*) {
  return cpu::sparse_patch(weights, weights_dtype, n_weights, indices, index_dtype, values, values_dtype, count, mode);
}

edgert_status cpu_sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights,
                                const void* indices, edgert_dtype index_dtype, size_t count, void* out,
                                edgert_dtype out_dtype, void*) {
  return cpu::sparse_gather(weights, weights_dtype, n_weights, indices, index_dtype, count, out, out_dtype);
}

edgert_status cpu_adaptive_conv(const float* x, const float* kernels, const float* bias, int64_t n, int64_t c_in,
                                int64_t height, int64_t width, int64_t f_out, int64_t patch, int32_t activation,
                                float* out, void*) {
  return cpu::adaptive_conv(x, kernels, bias, n, c_in, height, width, f_out, patch, activation, out);
}

edgert_status cpu_block_average(const float* grad, int64_t n, int64_t c, int64_t height, int64_t width, int64_t block,
                                float* out, void*) {
  return cpu::block_average(grad, n, c, height, width, block, out);
}

edgert_status cpu_gaussian_denoise(const cfloat* z, const float* var, int64_t n, int32_t modulation, cfloat* mean,
                                   float* var_out, void*) {
  return cpu::gaussian_denoise(z, var, n, modulation, mean, var_out);
}

const BackendTable kCpu = {
    "CPU",
    &cpu_query,
    &cpu_usable,
    nullptr,  // locate: host memory only
    nullptr,  // current_device
    nullptr,  // pageable_access
    &cpu_sparse_patch,
    &cpu_sparse_gather,
    &cpu_adaptive_conv,
    &cpu_block_average,
    &cpu_gaussian_denoise,
};

const char* backend_name(edgert_backend b) {
  switch (b) {
    case EDGERT_BACKEND_CPU: return "EDGERT_BACKEND_CPU";
    case EDGERT_BACKEND_CUDA: return "EDGERT_BACKEND_CUDA";
    case EDGERT_BACKEND_AUTO: return "EDGERT_BACKEND_AUTO";
    case EDGERT_BACKEND_MAX_ENUM: break;
  }
  return "?";
}

// "weights" or "buffer 2" for messages.
const char* label(const char* const* names, size_t i, char* buf, size_t size) {
  if (names != nullptr && names[i] != nullptr) return names[i];
  std::snprintf(buf, size, "buffer %zu", i);
  return buf;
}

}  // namespace

const BackendTable* find_backend(edgert_backend backend) {
  switch (backend) {
    case EDGERT_BACKEND_CPU: return &kCpu;
    case EDGERT_BACKEND_CUDA: return cuda_backend();
    case EDGERT_BACKEND_AUTO:
    case EDGERT_BACKEND_MAX_ENUM: break;
  }
  return nullptr;
}

const BackendTable* select_backend(edgert_backend requested, const void* const* ptrs, const char* const* names,
                                   size_t n, const char* op, edgert_status* status, edgert_backend* chosen) {
  if (requested != EDGERT_BACKEND_CPU && requested != EDGERT_BACKEND_CUDA && requested != EDGERT_BACKEND_AUTO) {
    *status = fail(EDGERT_ERR_INVALID_ARGUMENT,
                   "%s: unknown backend %d (expected EDGERT_BACKEND_CPU = 0, EDGERT_BACKEND_CUDA = 1 or "
                   "EDGERT_BACKEND_AUTO = 2)",
                   op, static_cast<int>(requested));
    return nullptr;
  }
  if (requested == EDGERT_BACKEND_CPU) {
    *chosen = EDGERT_BACKEND_CPU;
    return &kCpu;
  }
  const BackendTable* cuda = cuda_backend();
  if (requested == EDGERT_BACKEND_CUDA) {
    if (cuda == nullptr) {
      *status = fail(EDGERT_ERR_BACKEND_UNAVAILABLE,
                     "%s: EDGERT_BACKEND_CUDA requested but this library was built without CUDA kernels (no CUDA "
                     "compiler at build time); use EDGERT_BACKEND_CPU or EDGERT_BACKEND_AUTO",
                     op);
      return nullptr;
    }
    if (!cuda->usable()) {
      edgert_backend_info info{};
      cuda->query(&info);
      *status = fail(EDGERT_ERR_BACKEND_UNAVAILABLE,
                     "%s: EDGERT_BACKEND_CUDA requested; the CUDA kernels are compiled in but no device is usable (%s)",
                     op, info.detail);
      return nullptr;
    }
  } else if (cuda == nullptr || !cuda->usable()) {
    *chosen = EDGERT_BACKEND_CPU;  // AUTO without a usable device: everything is host memory
    return &kCpu;
  }

  // A usable CUDA backend: where do the buffers live?
  constexpr size_t kNone = ~size_t{0};
  size_t first_host = kNone, first_device = kNone, first_managed = kNone;
  const int current = cuda->current_device();
  char a[32], b[32];
  for (size_t i = 0; i < n; ++i) {
    if (ptrs[i] == nullptr) continue;
    int device = -1;
    switch (cuda->locate(ptrs[i], &device)) {
      case Memory::kHost:
        if (first_host == kNone) first_host = i;
        break;
      case Memory::kPinned: break;
      case Memory::kManaged:
        if (first_managed == kNone) first_managed = i;
        break;
      case Memory::kDevice:
        if (device != current) {
          *status = fail(EDGERT_ERR_INVALID_ARGUMENT,
                         "%s: %s is memory of CUDA device %d, but the calling thread's current device is %d "
                         "(cudaSetDevice first)",
                         op, label(names, i, a, sizeof(a)), device, current);
          return nullptr;
        }
        if (first_device == kNone) first_device = i;
        break;
    }
  }
  if (requested == EDGERT_BACKEND_AUTO) {
    if (first_device != kNone && first_host != kNone) {
      *status = fail(EDGERT_ERR_INVALID_ARGUMENT,
                     "%s: EDGERT_BACKEND_AUTO got both host and device buffers (%s is pageable host memory, %s is "
                     "CUDA device memory); put them on one side",
                     op, label(names, first_host, a, sizeof(a)), label(names, first_device, b, sizeof(b)));
      return nullptr;
    }
    const bool on_device = first_device != kNone || (first_host == kNone && first_managed != kNone);
    *chosen = on_device ? EDGERT_BACKEND_CUDA : EDGERT_BACKEND_CPU;
    return on_device ? cuda : &kCpu;
  }
  if (first_host != kNone && !cuda->pageable_access()) {
    *status = fail(EDGERT_ERR_INVALID_ARGUMENT,
                   "%s: EDGERT_BACKEND_CUDA needs device-accessible buffers, but %s is pageable host memory (the "
                   "device cannot read it)",
                   op, label(names, first_host, a, sizeof(a)));
    return nullptr;
  }
  *chosen = EDGERT_BACKEND_CUDA;
  return cuda;
}

}  // namespace edgert::detail

namespace {

using edgert::cfloat;
using edgert::detail::BackendTable;

// Resolves the backend of one hot-path call over `N` named buffers.
template <size_t N>
const BackendTable* pick(edgert_backend backend, const void* const (&ptrs)[N], const char* const (&names)[N],
                         const char* op, edgert_status* status) {
  edgert_backend chosen = EDGERT_BACKEND_CPU;
  return edgert::detail::select_backend(backend, ptrs, names, N, op, status, &chosen);
}

}  // namespace

extern "C" {

edgert_status edgert_backend_query(edgert_backend backend, edgert_backend_info* info) {
  using edgert::detail::fail;
  if (info == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "edgert_backend_query: info is NULL");
  if (backend == EDGERT_BACKEND_AUTO) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT,
                "edgert_backend_query: EDGERT_BACKEND_AUTO is a choice, not a backend: query EDGERT_BACKEND_CPU or "
                "EDGERT_BACKEND_CUDA, or resolve AUTO with edgert_backend_select");
  }
  if (backend != EDGERT_BACKEND_CPU && backend != EDGERT_BACKEND_CUDA) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "edgert_backend_query: unknown backend %d", static_cast<int>(backend));
  }
  std::memset(info, 0, sizeof(*info));
  const BackendTable* table = edgert::detail::find_backend(backend);
  if (table == nullptr) {  // CUDA, not linked in
    std::snprintf(info->detail, sizeof(info->detail), "not compiled in (built without a CUDA compiler)");
    return EDGERT_OK;
  }
  table->query(info);
  return EDGERT_OK;
}

const char* edgert_backend_name(edgert_backend backend) { return edgert::detail::backend_name(backend); }

edgert_status edgert_backend_select(edgert_backend requested, const void* const* buffers, size_t count,
                                    edgert_backend* chosen) {
  using edgert::detail::fail;
  if (chosen == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "edgert_backend_select: chosen is NULL");
  if (buffers == nullptr && count > 0) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "edgert_backend_select: buffers is NULL with count %zu", count);
  }
  edgert_status status = EDGERT_OK;
  edgert_backend result = EDGERT_BACKEND_CPU;
  if (edgert::detail::select_backend(requested, buffers, nullptr, count, "edgert_backend_select", &status,
                                     &result) == nullptr) {
    return status;
  }
  *chosen = result;
  return EDGERT_OK;
}

edgert_status edgert_sparse_patch(void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                                  edgert_dtype index_dtype, const void* values, edgert_dtype values_dtype,
                                  size_t count, edgert_patch_mode mode) {
  return edgert::cpu::sparse_patch(weights, weights_dtype, n_weights, indices, index_dtype, values, values_dtype, count,
                                   mode);
}

edgert_status edgert_sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights,
                                   const void* indices, edgert_dtype index_dtype, size_t count, void* out,
                                   edgert_dtype out_dtype) {
  return edgert::cpu::sparse_gather(weights, weights_dtype, n_weights, indices, index_dtype, count, out, out_dtype);
}

edgert_status edgert_sparse_patch_on(edgert_backend backend, void* stream, void* weights, edgert_dtype weights_dtype,
                                     size_t n_weights, const void* indices, edgert_dtype index_dtype,
                                     const void* values, edgert_dtype values_dtype, size_t count,
                                     edgert_patch_mode mode) {
  edgert_status st = EDGERT_OK;
  const BackendTable* t = pick(backend, {weights, indices, values}, {"weights", "indices", "values"}, "sparse_patch", &st);
  if (t == nullptr) return st;
  return t->sparse_patch(weights, weights_dtype, n_weights, indices, index_dtype, values, values_dtype, count, mode,
                         stream);
}

edgert_status edgert_sparse_gather_on(edgert_backend backend, void* stream, const void* weights,
                                      edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                                      edgert_dtype index_dtype, size_t count, void* out, edgert_dtype out_dtype) {
  edgert_status st = EDGERT_OK;
  const BackendTable* t = pick(backend, {weights, indices, out}, {"weights", "indices", "out"}, "sparse_gather", &st);
  if (t == nullptr) return st;
  return t->sparse_gather(weights, weights_dtype, n_weights, indices, index_dtype, count, out, out_dtype, stream);
}

edgert_status edgert_adaptive_conv(edgert_backend backend, void* stream, const float* x, const float* kernels,
                                   const float* bias, int64_t n, int64_t c_in, int64_t height, int64_t width,
                                   int64_t f_out, int64_t patch, edgert_activation activation, float* out) {
  edgert_status st = EDGERT_OK;
  const BackendTable* t =
      pick(backend, {x, kernels, bias, out}, {"x", "kernels", "bias", "out"}, "adaptive_conv", &st);
  if (t == nullptr) return st;
  return t->adaptive_conv(x, kernels, bias, n, c_in, height, width, f_out, patch, static_cast<int32_t>(activation),
                          out, stream);
}

edgert_status edgert_block_average(edgert_backend backend, void* stream, const float* grad, int64_t n, int64_t c,
                                   int64_t height, int64_t width, int64_t block, float* out) {
  edgert_status st = EDGERT_OK;
  const BackendTable* t = pick(backend, {grad, out}, {"grad", "out"}, "block_average", &st);
  if (t == nullptr) return st;
  return t->block_average(grad, n, c, height, width, block, out, stream);
}

edgert_status edgert_gaussian_denoise(edgert_backend backend, void* stream, const float* z, const float* var,
                                      int64_t n, edgert_modulation modulation, float* mean, float* var_out) {
  edgert_status st = EDGERT_OK;
  const BackendTable* t =
      pick(backend, {z, var, mean, var_out}, {"z", "var", "mean", "var_out"}, "gaussian_denoise", &st);
  if (t == nullptr) return st;
  return t->gaussian_denoise(reinterpret_cast<const cfloat*>(z), var, n, static_cast<int32_t>(modulation),
                             reinterpret_cast<cfloat*>(mean), var_out, stream);
}

}  // extern "C"
