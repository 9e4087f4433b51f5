// Shared by every binding file. Each file is compiled twice: into edgert._edgert
// (CPU kernels) and, when CUDA is built, into edgert._edgert_cuda with
// EDGERT_CUDA_MODULE defined (CUDA kernels, device pointers, explicit stream).
// Both modules expose the same function names; edgert.ops picks the module by
// device and asks its backend registry (backend_select) what runs. The op
// bindings call the C API entry points with the module's backend, so the
// registry of libedgert does the dispatch.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "array.hpp"
#include "edgert/edgert.h"
#include "edgert/kernels.hpp"

namespace edgert::py {

// EDGERT_BACKEND_NS / EDGERT_STREAM_ARG: for mmnet_detect, which has no
// stateless entry point in the C API (edgert_mmnet_* holds host parameters).
#if defined(EDGERT_CUDA_MODULE)
constexpr bool kOnCuda = true;
constexpr edgert_backend kBackend = EDGERT_BACKEND_CUDA;
#define EDGERT_BACKEND_NS ::edgert::cuda
#define EDGERT_STREAM_ARG , reinterpret_cast<void*>(stream)
#else
constexpr bool kOnCuda = false;
constexpr edgert_backend kBackend = EDGERT_BACKEND_CPU;
#define EDGERT_BACKEND_NS ::edgert::cpu
#define EDGERT_STREAM_ARG
#endif

// Every op binding takes `stream` (a cudaStream_t as an integer, 0 = default);
// the CPU module ignores it so that Python calls look the same.
using StreamHandle = std::uintptr_t;
inline void* as_stream(StreamHandle stream) { return kOnCuda ? reinterpret_cast<void*>(stream) : nullptr; }

void bind_info(pybind11::module_& m);
void bind_block_average(pybind11::module_& m);
void bind_adaptive_conv(pybind11::module_& m);
void bind_mmnet(pybind11::module_& m);
void bind_packet(pybind11::module_& m);  // CPU module only (Slot, inspect_packet, crc32c)
void bind_sparse(pybind11::module_& m);

}  // namespace edgert::py
