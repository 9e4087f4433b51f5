// Internal: the CUDA backend probe. Defined by the CUDA library when it is
// linked in (src/cuda/probe.cu) and by a stub otherwise (core/cuda_stub.cpp),
// so that the CPU core never depends on the CUDA runtime.
#pragma once

#include "edgert/edgert.h"

extern "C" void edgert_detail_cuda_query(edgert_backend_info* info);
