#include <pybind11/pybind11.h>

#include "bindings.hpp"

namespace edgert::py {

namespace pyb = pybind11;

void bind_block_average(pyb::module_& m) {
  m.def(
      "block_average",
      [](pyb::handle grad, int64_t block, pyb::handle out, StreamHandle stream) {
        ArrayArg g(grad, "grad");
        g.require({Dtype::f32}, {-1, -1, -1, -1}, "[N, C, H, W]", kOnCuda);
        if (block <= 0) throw pyb::value_error("block must be positive, got " + std::to_string(block));
        const int64_t bh = (g.dim(2) + block - 1) / block, bw = (g.dim(3) + block - 1) / block;
        ArrayArg o(out, "out");
        o.require({Dtype::f32}, {g.dim(0), bh, bw}, "[N, ceil(H/b), ceil(W/b)]", kOnCuda);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = edgert_block_average(kBackend, as_stream(stream), g.ptr<const float>(), g.dim(0), g.dim(1), g.dim(2),
                                    g.dim(3), block, o.ptr<float>());
        }
        check(st, "block_average");
      },
      pyb::arg("grad"), pyb::arg("block"), pyb::arg("out"), pyb::arg("stream") = 0,
      "out[n, i, j] = mean |grad[n, :, block rows i, block cols j]| (partial edge blocks use valid pixels).");
}

}  // namespace edgert::py
