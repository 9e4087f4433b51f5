#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "edgert/edgert.h"

namespace edgert::py {

void bind_info(pybind11::module_& m) {
  m.def("version", [] { return std::string(edgert_version_string()); }, "libedgert version string");
  m.def("build_flags", [] { return std::string(edgert_build_flags()); }, "compile-time flags of libedgert");
  m.def(
      "backend_query",
      [](int backend) {
        edgert_backend_info info{};
        check(edgert_backend_query(static_cast<edgert_backend>(backend), &info), "backend_query");
        pybind11::dict d;
        d["compiled"] = info.compiled != 0;
        d["usable"] = info.usable != 0;
        d["device_count"] = info.device_count;
        d["num_threads"] = info.num_threads;
        d["detail"] = std::string(info.detail);
        return d;
      },
      pybind11::arg("backend"), "Backend info dict for 0 = CPU, 1 = CUDA (as compiled into this module).");
  m.attr("ON_CUDA") = kOnCuda;
}

}  // namespace edgert::py
