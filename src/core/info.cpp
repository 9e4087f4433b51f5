#include <cstdio>
#include <cstring>

#include "core/backend_probe.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "edgert/edgert.h"

#ifndef EDGERT_VERSION_STRING
#error "EDGERT_VERSION_STRING must be defined by the build"
#endif
#ifndef EDGERT_BUILD_TYPE
#define EDGERT_BUILD_TYPE "unknown"
#endif
#ifndef EDGERT_SANITIZE_FLAGS
#define EDGERT_SANITIZE_FLAGS ""
#endif

extern "C" const char* edgert_version_string(void) { return EDGERT_VERSION_STRING; }

extern "C" void edgert_version(int* major, int* minor, int* patch) {
  int parts[3] = {0, 0, 0};
  std::sscanf(EDGERT_VERSION_STRING, "%d.%d.%d", &parts[0], &parts[1], &parts[2]);
  if (major) *major = parts[0];
  if (minor) *minor = parts[1];
  if (patch) *patch = parts[2];
}

extern "C" edgert_status edgert_backend_query(edgert_backend backend, edgert_backend_info* info) {
  using edgert::detail::fail;
  if (info == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "edgert_backend_query: info is NULL");
  std::memset(info, 0, sizeof(*info));
  switch (backend) {
    case EDGERT_BACKEND_CPU:
      info->compiled = 1;
      info->usable = 1;
      info->device_count = 1;
      info->num_threads = edgert::detail::max_threads();
#if defined(EDGERT_WITH_OPENMP)
      std::snprintf(info->detail, sizeof(info->detail), "openmp, %d threads", info->num_threads);
#else
      std::snprintf(info->detail, sizeof(info->detail), "serial (built without OpenMP)");
#endif
      return EDGERT_OK;
    case EDGERT_BACKEND_CUDA:
      edgert_detail_cuda_query(info);
      return EDGERT_OK;
  }
  return fail(EDGERT_ERR_INVALID_ARGUMENT, "edgert_backend_query: unknown backend %d", static_cast<int>(backend));
}

extern "C" const char* edgert_build_flags(void) {
  static const char flags[] =
      "build=" EDGERT_BUILD_TYPE
#if defined(EDGERT_WITH_OPENMP)
      " openmp=1"
#else
      " openmp=0"
#endif
#if defined(__aarch64__)
      " arch=aarch64"
#elif defined(__x86_64__)
      " arch=x86_64"
#else
      " arch=other"
#endif
      " sanitize=" EDGERT_SANITIZE_FLAGS;
  return flags;
}
