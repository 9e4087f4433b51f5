#include <pybind11/pybind11.h>

#include "bindings.hpp"

#if defined(EDGERT_CUDA_MODULE)
#define EDGERT_MODULE_NAME _edgert_cuda
#else
#define EDGERT_MODULE_NAME _edgert
#endif

PYBIND11_MODULE(EDGERT_MODULE_NAME, m) {
  m.doc() = "edgert native kernels (thin glue over libedgert)";
#if !defined(EDGERT_CUDA_MODULE)
  // Errors from the runtime that are not plain argument errors. PacketError is
  // also a ValueError: what arrived over the network was malformed.
  auto base = pybind11::exception<std::runtime_error>(m, "EdgertError", PyExc_RuntimeError);
  pybind11::object packet_error =
      pybind11::reinterpret_steal<pybind11::object>(PyErr_NewException(
          "edgert._edgert.PacketError", pybind11::make_tuple(base, pybind11::handle(PyExc_ValueError)).ptr(),
          nullptr));
  m.attr("PacketError") = packet_error;
#endif
  edgert::py::bind_info(m);
  edgert::py::bind_block_average(m);
  edgert::py::bind_adaptive_conv(m);
  edgert::py::bind_mmnet(m);
  edgert::py::bind_packet(m);
  edgert::py::bind_sparse(m);
}
