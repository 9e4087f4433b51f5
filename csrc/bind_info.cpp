#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.hpp"
#include "edgert/edgert.h"

namespace edgert::py {

namespace pyb = pybind11;

namespace {

pyb::dict query(edgert_backend backend) {
  edgert_backend_info info{};
  check(edgert_backend_query(backend, &info), "backend_query");
  pyb::dict d;
  d["compiled"] = info.compiled != 0;
  d["usable"] = info.usable != 0;
  d["device_count"] = info.device_count;
  d["num_threads"] = info.num_threads;
  d["detail"] = std::string(info.detail);
  return d;
}

// "auto" / "cpu" / "cuda" or the edgert_backend integer.
edgert_backend parse_backend(const pyb::handle& backend) {
  if (pyb::isinstance<pyb::str>(backend)) {
    const std::string b = pyb::cast<std::string>(backend);
    if (b == "auto") return EDGERT_BACKEND_AUTO;
    if (b == "cpu") return EDGERT_BACKEND_CPU;
    if (b == "cuda") return EDGERT_BACKEND_CUDA;
    throw pyb::value_error("backend: expected 'auto', 'cpu' or 'cuda' (or 2 / 0 / 1), got '" + b + "'");
  }
  if (pyb::isinstance<pyb::int_>(backend) && !pyb::isinstance<pyb::bool_>(backend)) {
    return static_cast<edgert_backend>(pyb::cast<int>(backend));  // the library rejects unknown values
  }
  throw pyb::type_error("backend: expected 'auto', 'cpu' or 'cuda' (or 2 / 0 / 1), got " +
                        std::string(pyb::str(pyb::type::handle_of(backend).attr("__name__"))));
}

}  // namespace

void bind_info(pyb::module_& m) {
  m.def("version", [] { return std::string(edgert_version_string()); }, "libedgert version string");
  m.def("build_flags", [] { return std::string(edgert_build_flags()); }, "compile-time flags of libedgert");
  m.def(
      "backend_query", [](int backend) { return query(static_cast<edgert_backend>(backend)); }, pyb::arg("backend"),
      "Backend info dict for 0 = CPU, 1 = CUDA (as compiled into this module).");
  m.def(
      "backends",
      [] {
        pyb::dict d;
        d["cpu"] = query(EDGERT_BACKEND_CPU);
        d["cuda"] = query(EDGERT_BACKEND_CUDA);
        return d;
      },
      "The backend registry of this module's libedgert: {'cpu': info, 'cuda': info}.");
  m.def(
      "backend_select",
      [](pyb::handle backend, const std::vector<std::uintptr_t>& buffers) {
        const edgert_backend requested = parse_backend(backend);
        std::vector<const void*> ptrs(buffers.size());
        for (size_t i = 0; i < buffers.size(); ++i) ptrs[i] = reinterpret_cast<const void*>(buffers[i]);
        edgert_backend chosen = EDGERT_BACKEND_CPU;
        check(edgert_backend_select(requested, ptrs.data(), ptrs.size(), &chosen), "backend_select");
        return std::string(chosen == EDGERT_BACKEND_CUDA ? "cuda" : "cpu");
      },
      pyb::arg("backend"), pyb::arg("buffers") = std::vector<std::uintptr_t>{},
      "The backend ('cpu' or 'cuda') that libedgert's registry picks for a call over these buffer addresses:\n"
      "'auto' runs on CUDA when it is compiled in and usable and the buffers are device memory, else on the CPU.\n"
      "Raises ValueError (unknown backend, mixed host/device buffers) or EdgertError (backend unavailable).");
  m.attr("BACKEND_CPU") = static_cast<int>(EDGERT_BACKEND_CPU);
  m.attr("BACKEND_CUDA") = static_cast<int>(EDGERT_BACKEND_CUDA);
  m.attr("BACKEND_AUTO") = static_cast<int>(EDGERT_BACKEND_AUTO);
  m.attr("ON_CUDA") = kOnCuda;
}

}  // namespace edgert::py
