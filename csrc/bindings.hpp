// Shared by every binding file. Each file is compiled twice: into edgert._edgert
// (CPU kernels) and, when CUDA is built, into edgert._edgert_cuda with
// EDGERT_CUDA_MODULE defined (CUDA kernels, device pointers, explicit stream).
// Both modules expose the same function names; edgert.ops picks by device.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "array.hpp"
#include "edgert/kernels.hpp"

namespace edgert::py {

#if defined(EDGERT_CUDA_MODULE)
constexpr bool kOnCuda = true;
#define EDGERT_BACKEND_NS ::edgert::cuda
#define EDGERT_STREAM_ARG , reinterpret_cast<void*>(stream)
#else
constexpr bool kOnCuda = false;
#define EDGERT_BACKEND_NS ::edgert::cpu
#define EDGERT_STREAM_ARG
#endif

// Every op binding takes `stream` (a cudaStream_t as an integer, 0 = default);
// the CPU module ignores it so that Python calls look the same.
using StreamHandle = std::uintptr_t;

void bind_info(pybind11::module_& m);
void bind_block_average(pybind11::module_& m);
void bind_adaptive_conv(pybind11::module_& m);
void bind_mmnet(pybind11::module_& m);
void bind_packet(pybind11::module_& m);  // CPU module only (Slot, inspect_packet, crc32c)
void bind_sparse(pybind11::module_& m);

}  // namespace edgert::py
