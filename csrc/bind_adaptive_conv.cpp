#include <pybind11/pybind11.h>

#include "bindings.hpp"

namespace edgert::py {

namespace pyb = pybind11;

void bind_adaptive_conv(pyb::module_& m) {
  m.def(
      "adaptive_conv",
      [](pyb::handle x_obj, pyb::handle kernels_obj, pyb::handle bias_obj, int64_t patch, int32_t activation,
         pyb::handle out_obj, StreamHandle stream) {
        if (patch <= 0) throw pyb::value_error("patch: expected a positive patch size, got " + std::to_string(patch));
        ArrayArg x(x_obj, "x");
        x.require({Dtype::f32}, {-1, -1, -1, -1}, "[N, Cin, H, W]", kOnCuda);
        const int64_t n = x.dim(0), c_in = x.dim(1), h = x.dim(2), w = x.dim(3);
        const int64_t gh = (h + patch - 1) / patch, gw = (w + patch - 1) / patch;
        ArrayArg k(kernels_obj, "kernels");
        k.require({Dtype::f32}, {n, gh, gw, -1, c_in, 3, 3}, "[N, ceil(H/P), ceil(W/P), F, Cin, 3, 3]", kOnCuda);
        const int64_t f = k.dim(3);
        ArrayArg b(bias_obj, "bias");
        b.require({Dtype::f32}, {n, gh, gw, f}, "[N, ceil(H/P), ceil(W/P), F]", kOnCuda);
        ArrayArg o(out_obj, "out");
        o.require({Dtype::f32}, {n, f, h, w}, "[N, F, H, W]", kOnCuda);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = edgert_adaptive_conv(kBackend, as_stream(stream), x.ptr<const float>(), k.ptr<const float>(),
                                    b.ptr<const float>(), n, c_in, h, w, f, patch,
                                    static_cast<edgert_activation>(activation), o.ptr<float>());
        }
        check(st, "adaptive_conv");
      },
      pyb::arg("x"), pyb::arg("kernels"), pyb::arg("bias"), pyb::arg("patch"), pyb::arg("activation"),
      pyb::arg("out"), pyb::arg("stream") = 0,
      "Per-patch 3x3 convolution: out[N, F, H, W] = act(conv3x3(patch, kernels[p]) + bias[p]), zeros outside "
      "each patch. activation: 0 none, 1 relu.");
}

}  // namespace edgert::py
