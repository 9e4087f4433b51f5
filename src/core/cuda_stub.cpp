#include <cstdio>

#include "core/backend_probe.hpp"

extern "C" void edgert_detail_cuda_query(edgert_backend_info* info) {
  info->compiled = 0;
  info->usable = 0;
  info->device_count = 0;
  info->num_threads = 0;
  std::snprintf(info->detail, sizeof(info->detail), "not compiled in (built without a CUDA compiler)");
}
