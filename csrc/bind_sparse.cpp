#include <pybind11/pybind11.h>

#include <string>

#include "bindings.hpp"

namespace edgert::py {

namespace pyb = pybind11;

namespace {

edgert_dtype to_edgert(Dtype d) {
  switch (d) {
    case Dtype::f32: return EDGERT_F32;
    case Dtype::f16: return EDGERT_F16;
    case Dtype::i32: return EDGERT_I32;
    case Dtype::u32: return EDGERT_U32;
    default: throw pyb::type_error(std::string("unsupported dtype ") + dtype_name(d));
  }
}

// "add"/"set" or the edgert_patch_mode integer.
edgert_patch_mode parse_mode(const pyb::handle& mode) {
  if (pyb::isinstance<pyb::str>(mode)) {
    const std::string m = pyb::cast<std::string>(mode);
    if (m == "add") return EDGERT_PATCH_ADD;
    if (m == "set") return EDGERT_PATCH_SET;
    throw pyb::value_error("mode: expected 'add' or 'set' (or 0 / 1), got '" + m + "'");
  }
  if (pyb::isinstance<pyb::int_>(mode) && !pyb::isinstance<pyb::bool_>(mode)) {
    const long long m = pyb::cast<long long>(mode);
    if (m == EDGERT_PATCH_ADD || m == EDGERT_PATCH_SET) return static_cast<edgert_patch_mode>(m);
    throw pyb::value_error("mode: expected 'add' or 'set' (or 0 / 1), got " + std::to_string(m));
  }
  throw pyb::type_error("mode: expected 'add' or 'set' (or 0 / 1), got " +
                        std::string(pyb::str(pyb::type::handle_of(mode).attr("__name__"))));
}

}  // namespace

void bind_sparse(pyb::module_& m) {
  m.def(
      "sparse_patch",
      [](pyb::handle weights, pyb::handle indices, pyb::handle values, pyb::handle mode, StreamHandle stream) {
        ArrayArg w(weights, "weights");
        w.require({Dtype::f32, Dtype::f16}, {-1}, "[P]", kOnCuda);
        ArrayArg i(indices, "indices");
        i.require({Dtype::i32, Dtype::u32}, {-1}, "[K]", kOnCuda);
        ArrayArg v(values, "values");
        v.require({Dtype::f32, Dtype::f16}, {i.dim(0)}, "[K]", kOnCuda);
        const edgert_patch_mode pm = parse_mode(mode);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = edgert_sparse_patch_on(kBackend, as_stream(stream), w.data(), to_edgert(w.dtype()),
                                      static_cast<size_t>(w.dim(0)), i.data(), to_edgert(i.dtype()), v.data(),
                                      to_edgert(v.dtype()), static_cast<size_t>(i.dim(0)), pm);
        }
        check(st, "sparse_patch");
      },
      pyb::arg("weights"), pyb::arg("indices"), pyb::arg("values"), pyb::arg("mode") = "add", pyb::arg("stream") = 0,
      "In place: weights[indices[k]] += values[k] (mode 'add') or = values[k] ('set').\n"
      "weights float32|float16 [P]; indices int32|uint32 [K] strictly increasing, < P; values float32|float16 [K].\n"
      "All indices are checked first: on ValueError the weights are unchanged.");
  m.def(
      "sparse_gather",
      [](pyb::handle weights, pyb::handle indices, pyb::handle out, StreamHandle stream) {
        ArrayArg w(weights, "weights");
        w.require({Dtype::f32, Dtype::f16}, {-1}, "[P]", kOnCuda);
        ArrayArg i(indices, "indices");
        i.require({Dtype::i32, Dtype::u32}, {-1}, "[K]", kOnCuda);
        ArrayArg o(out, "out");
        o.require({Dtype::f32, Dtype::f16}, {i.dim(0)}, "[K]", kOnCuda);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = edgert_sparse_gather_on(kBackend, as_stream(stream), w.data(), to_edgert(w.dtype()),
                                       static_cast<size_t>(w.dim(0)), i.data(), to_edgert(i.dtype()),
                                       static_cast<size_t>(i.dim(0)), o.data(), to_edgert(o.dtype()));
        }
        check(st, "sparse_gather");
      },
      pyb::arg("weights"), pyb::arg("indices"), pyb::arg("out"), pyb::arg("stream") = 0,
      "out[k] = weights[indices[k]] converted to out's dtype (float32|float16 [K]); same index checks.");
}

}  // namespace edgert::py
