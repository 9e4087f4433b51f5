#include <pybind11/pybind11.h>

#include "bindings.hpp"

namespace edgert::py {

namespace pyb = pybind11;

void bind_mmnet(pyb::module_& m) {
  m.def(
      "gaussian_denoise",
      [](pyb::handle z_obj, pyb::handle var_obj, int32_t modulation, pyb::handle mean_obj, pyb::handle var_out_obj,
         StreamHandle stream) {
        ArrayArg z(z_obj, "z");
        z.require({Dtype::c64}, std::vector<int64_t>(static_cast<size_t>(z.ndim()), -1), "[...]", kOnCuda);
        ArrayArg var(var_obj, "var");
        var.require({Dtype::f32}, z.shape(), "like z", kOnCuda);
        ArrayArg mean(mean_obj, "mean");
        mean.require({Dtype::c64}, z.shape(), "like z", kOnCuda);
        std::unique_ptr<ArrayArg> var_out;
        if (!var_out_obj.is_none()) {
          var_out = std::make_unique<ArrayArg>(var_out_obj, "var_out");
          var_out->require({Dtype::f32}, z.shape(), "like z", kOnCuda);
        }
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = edgert_gaussian_denoise(kBackend, as_stream(stream), z.ptr<const float>(), var.ptr<const float>(),
                                       z.numel(), static_cast<edgert_modulation>(modulation), mean.ptr<float>(),
                                       var_out ? var_out->ptr<float>() : nullptr);
        }
        check(st, "gaussian_denoise");
      },
      pyb::arg("z"), pyb::arg("var"), pyb::arg("modulation"), pyb::arg("mean"), pyb::arg("var_out") = pyb::none(),
      pyb::arg("stream") = 0, "Posterior mean (and variance) of unit-energy QAM symbols given z = x + CN(0, var).");

  m.def(
      "mmnet_detect",
      [](pyb::handle H_obj, pyb::handle y_obj, pyb::handle A_obj, pyb::handle theta1_obj, pyb::handle theta2_obj,
         pyb::handle sigma2_obj, int32_t modulation, bool all_layers, pyb::handle x_obj, pyb::handle dec_obj,
         StreamHandle stream) {
        ArrayArg H(H_obj, "H");
        H.require({Dtype::c64}, {-1, -1, -1}, "[G, Nr, Nt]", kOnCuda);
        const int64_t g = H.dim(0), nr = H.dim(1), nt = H.dim(2);
        ArrayArg y(y_obj, "y");
        y.require({Dtype::c64}, {g, -1, nr}, "[G, B, Nr]", kOnCuda);
        const int64_t b = y.dim(1);
        ArrayArg theta2(theta2_obj, "theta2");
        theta2.require({Dtype::f32}, {-1, g, nt}, "[T, G, Nt]", kOnCuda);
        const int64_t t = theta2.dim(0);
        std::unique_ptr<ArrayArg> A, theta1;
        if (A_obj.is_none() == theta1_obj.is_none()) {
          throw pyb::value_error("mmnet_detect: pass exactly one of A (full form) and theta1 (iid form)");
        }
        if (!A_obj.is_none()) {
          A = std::make_unique<ArrayArg>(A_obj, "A");
          A->require({Dtype::c64}, {t, g, nt, nr}, "[T, G, Nt, Nr]", kOnCuda);
        } else {
          theta1 = std::make_unique<ArrayArg>(theta1_obj, "theta1");
          theta1->require({Dtype::f32}, {t, g}, "[T, G]", kOnCuda);
        }
        ArrayArg sigma2(sigma2_obj, "sigma2");
        sigma2.require({Dtype::f32}, {g}, "[G]", kOnCuda);
        ArrayArg x(x_obj, "x_out");
        if (all_layers) {
          x.require({Dtype::c64}, {t, g, b, nt}, "[T, G, B, Nt]", kOnCuda);
        } else {
          x.require({Dtype::c64}, {g, b, nt}, "[G, B, Nt]", kOnCuda);
        }
        std::unique_ptr<ArrayArg> dec;
        if (!dec_obj.is_none()) {
          dec = std::make_unique<ArrayArg>(dec_obj, "decisions");
          dec->require({Dtype::i32}, {g, b, nt}, "[G, B, Nt]", kOnCuda);
        }
        MMNetShape shape;
        shape.layers = t;
        shape.groups = g;
        shape.batch = b;
        shape.n_rx = nr;
        shape.n_tx = nt;
        shape.modulation = modulation;
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = EDGERT_BACKEND_NS::mmnet_detect(shape, H.ptr<const cfloat>(), y.ptr<const cfloat>(),
                                               A ? A->ptr<const cfloat>() : nullptr,
                                               theta1 ? theta1->ptr<const float>() : nullptr,
                                               theta2.ptr<const float>(), sigma2.ptr<const float>(), all_layers,
                                               x.ptr<cfloat>(), dec ? dec->ptr<int32_t>() : nullptr EDGERT_STREAM_ARG);
        }
        check(st, "mmnet_detect");
      },
      pyb::arg("H"), pyb::arg("y"), pyb::arg("A"), pyb::arg("theta1"), pyb::arg("theta2"), pyb::arg("sigma2"),
      pyb::arg("modulation"), pyb::arg("all_layers"), pyb::arg("x_out"), pyb::arg("decisions") = pyb::none(),
      pyb::arg("stream") = 0, "Batched MMNet detection (see edgert/kernels.hpp for the layer equations).");
#if !defined(EDGERT_CUDA_MODULE)
  // Training (CPU module only): the forward fills xs and the tape; the backward reads them.
  auto train_shape = [](const ArrayArg& H, const ArrayArg& y, const ArrayArg& sigma2, const ArrayArg& A,
                        const ArrayArg& theta2, int32_t modulation) {
    H.require({Dtype::c64}, {-1, -1, -1}, "[G, Nr, Nt]", false);
    MMNetShape shape;
    shape.groups = H.dim(0), shape.n_rx = H.dim(1), shape.n_tx = H.dim(2), shape.modulation = modulation;
    y.require({Dtype::c64}, {shape.groups, -1, shape.n_rx}, "[G, B, Nr]", false);
    shape.batch = y.dim(1);
    sigma2.require({Dtype::f32}, {shape.groups, shape.batch}, "[G, B]", false);
    theta2.require({Dtype::f32}, {-1, shape.groups, shape.n_tx}, "[T, G, Nt]", false);
    shape.layers = theta2.dim(0);
    A.require({Dtype::c64}, {shape.layers, shape.groups, shape.n_tx, shape.n_rx}, "[T, G, Nt, Nr]", false);
    return shape;
  };
  m.def(
      "mmnet_tape_size",
      [](int64_t layers, int64_t groups, int64_t batch, int64_t n_tx) {
        MMNetShape shape;
        shape.layers = layers, shape.groups = groups, shape.batch = batch, shape.n_tx = n_tx;
        return ::edgert::cpu::mmnet_tape_size(shape);
      },
      pyb::arg("layers"), pyb::arg("groups"), pyb::arg("batch"), pyb::arg("n_tx"),
      "Floats in the tape of mmnet_train_forward.");
  m.def(
      "mmnet_train_forward",
      [train_shape](pyb::handle H_obj, pyb::handle y_obj, pyb::handle sigma2_obj, pyb::handle A_obj,
                    pyb::handle theta2_obj, int32_t modulation, pyb::handle xs_obj, pyb::handle tape_obj) {
        ArrayArg H(H_obj, "H"), y(y_obj, "y"), sigma2(sigma2_obj, "sigma2"), A(A_obj, "A"), theta2(theta2_obj, "theta2");
        const MMNetShape shape = train_shape(H, y, sigma2, A, theta2, modulation);
        ArrayArg xs(xs_obj, "xs"), tape(tape_obj, "tape");
        xs.require({Dtype::f32}, {shape.layers, shape.groups, shape.batch, 2, shape.n_tx}, "[T, G, B, 2, Nt]", false);
        tape.require({Dtype::f32}, {::edgert::cpu::mmnet_tape_size(shape)}, "[mmnet_tape_size]", false);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = ::edgert::cpu::mmnet_train_forward(shape, H.ptr<const cfloat>(), y.ptr<const cfloat>(),
                                                  sigma2.ptr<const float>(), A.ptr<const cfloat>(),
                                                  theta2.ptr<const float>(), xs.ptr<float>(), tape.ptr<float>());
        }
        check(st, "mmnet_train_forward");
      },
      pyb::arg("H"), pyb::arg("y"), pyb::arg("sigma2"), pyb::arg("A"), pyb::arg("theta2"), pyb::arg("modulation"),
      pyb::arg("xs"), pyb::arg("tape"), "MMNet training forward (full-A form) recording the tape for the backward.");
  m.def(
      "mmnet_train_backward",
      [train_shape](pyb::handle H_obj, pyb::handle y_obj, pyb::handle sigma2_obj, pyb::handle A_obj,
                    pyb::handle theta2_obj, int32_t modulation, pyb::handle xs_obj, pyb::handle tape_obj,
                    pyb::handle grad_xs_obj, pyb::handle grad_A_obj, pyb::handle grad_theta2_obj) {
        ArrayArg H(H_obj, "H"), y(y_obj, "y"), sigma2(sigma2_obj, "sigma2"), A(A_obj, "A"), theta2(theta2_obj, "theta2");
        const MMNetShape shape = train_shape(H, y, sigma2, A, theta2, modulation);
        ArrayArg xs(xs_obj, "xs"), tape(tape_obj, "tape"), grad_xs(grad_xs_obj, "grad_xs"), grad_A(grad_A_obj, "grad_A"),
            grad_theta2(grad_theta2_obj, "grad_theta2");
        const std::vector<int64_t> xs_dims{shape.layers, shape.groups, shape.batch, 2, shape.n_tx};
        xs.require({Dtype::f32}, xs_dims, "[T, G, B, 2, Nt]", false);
        grad_xs.require({Dtype::f32}, xs_dims, "[T, G, B, 2, Nt]", false);
        tape.require({Dtype::f32}, {::edgert::cpu::mmnet_tape_size(shape)}, "[mmnet_tape_size]", false);
        grad_A.require({Dtype::c64}, A.shape(), "like A", false);
        grad_theta2.require({Dtype::f32}, theta2.shape(), "like theta2", false);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = ::edgert::cpu::mmnet_train_backward(
              shape, H.ptr<const cfloat>(), y.ptr<const cfloat>(), sigma2.ptr<const float>(), A.ptr<const cfloat>(),
              theta2.ptr<const float>(), xs.ptr<const float>(), tape.ptr<const float>(), grad_xs.ptr<const float>(),
              grad_A.ptr<cfloat>(), grad_theta2.ptr<float>());
        }
        check(st, "mmnet_train_backward");
      },
      pyb::arg("H"), pyb::arg("y"), pyb::arg("sigma2"), pyb::arg("A"), pyb::arg("theta2"), pyb::arg("modulation"),
      pyb::arg("xs"), pyb::arg("tape"), pyb::arg("grad_xs"), pyb::arg("grad_A"), pyb::arg("grad_theta2"),
      "Backward of mmnet_train_forward: dL/dA (complex) and dL/dtheta2 from dL/dxs.");
  m.def(
      "mmnet_train_mse_forward",
      [train_shape](pyb::handle H_obj, pyb::handle y_obj, pyb::handle sigma2_obj, pyb::handle A_obj,
                    pyb::handle theta2_obj, int32_t modulation, pyb::handle target_obj, pyb::handle xs_obj,
                    pyb::handle tape_obj, pyb::handle loss_obj) {
        ArrayArg H(H_obj, "H"), y(y_obj, "y"), sigma2(sigma2_obj, "sigma2"), A(A_obj, "A"), theta2(theta2_obj, "theta2");
        const MMNetShape shape = train_shape(H, y, sigma2, A, theta2, modulation);
        ArrayArg target(target_obj, "target"), xs(xs_obj, "xs"), tape(tape_obj, "tape"), loss(loss_obj, "loss");
        target.require({Dtype::f32}, {shape.groups, shape.batch, 2, shape.n_tx}, "[G, B, 2, Nt]", false);
        xs.require({Dtype::f32}, {shape.layers, shape.groups, shape.batch, 2, shape.n_tx}, "[T, G, B, 2, Nt]", false);
        tape.require({Dtype::f32}, {::edgert::cpu::mmnet_tape_size(shape)}, "[mmnet_tape_size]", false);
        loss.require({Dtype::f32}, {shape.groups}, "[G]", false);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = ::edgert::cpu::mmnet_train_mse_forward(shape, H.ptr<const cfloat>(), y.ptr<const cfloat>(),
                                                      sigma2.ptr<const float>(), A.ptr<const cfloat>(),
                                                      theta2.ptr<const float>(), target.ptr<const float>(),
                                                      xs.ptr<float>(), tape.ptr<float>(), loss.ptr<float>());
        }
        check(st, "mmnet_train_mse_forward");
      },
      pyb::arg("H"), pyb::arg("y"), pyb::arg("sigma2"), pyb::arg("A"), pyb::arg("theta2"), pyb::arg("modulation"),
      pyb::arg("target"), pyb::arg("xs"), pyb::arg("tape"), pyb::arg("loss"),
      "mmnet_train_forward with the training loss fused in: loss[g] = mean over layers and vectors of "
      "||x_t - target||^2.");
  m.def(
      "mmnet_train_mse_backward",
      [train_shape](pyb::handle H_obj, pyb::handle y_obj, pyb::handle sigma2_obj, pyb::handle A_obj,
                    pyb::handle theta2_obj, int32_t modulation, pyb::handle xs_obj, pyb::handle tape_obj,
                    pyb::handle target_obj, pyb::handle grad_loss_obj, pyb::handle grad_A_obj,
                    pyb::handle grad_theta2_obj) {
        ArrayArg H(H_obj, "H"), y(y_obj, "y"), sigma2(sigma2_obj, "sigma2"), A(A_obj, "A"), theta2(theta2_obj, "theta2");
        const MMNetShape shape = train_shape(H, y, sigma2, A, theta2, modulation);
        ArrayArg xs(xs_obj, "xs"), tape(tape_obj, "tape"), target(target_obj, "target"),
            grad_loss(grad_loss_obj, "grad_loss"), grad_A(grad_A_obj, "grad_A"), grad_theta2(grad_theta2_obj, "grad_theta2");
        xs.require({Dtype::f32}, {shape.layers, shape.groups, shape.batch, 2, shape.n_tx}, "[T, G, B, 2, Nt]", false);
        target.require({Dtype::f32}, {shape.groups, shape.batch, 2, shape.n_tx}, "[G, B, 2, Nt]", false);
        grad_loss.require({Dtype::f32}, {shape.groups}, "[G]", false);
        tape.require({Dtype::f32}, {::edgert::cpu::mmnet_tape_size(shape)}, "[mmnet_tape_size]", false);
        grad_A.require({Dtype::c64}, A.shape(), "like A", false);
        grad_theta2.require({Dtype::f32}, theta2.shape(), "like theta2", false);
        edgert_status st;
        {
          pyb::gil_scoped_release nogil;
          st = ::edgert::cpu::mmnet_train_mse_backward(
              shape, H.ptr<const cfloat>(), y.ptr<const cfloat>(), sigma2.ptr<const float>(), A.ptr<const cfloat>(),
              theta2.ptr<const float>(), xs.ptr<const float>(), tape.ptr<const float>(), target.ptr<const float>(),
              grad_loss.ptr<const float>(), grad_A.ptr<cfloat>(), grad_theta2.ptr<float>());
        }
        check(st, "mmnet_train_mse_backward");
      },
      pyb::arg("H"), pyb::arg("y"), pyb::arg("sigma2"), pyb::arg("A"), pyb::arg("theta2"), pyb::arg("modulation"),
      pyb::arg("xs"), pyb::arg("tape"), pyb::arg("target"), pyb::arg("grad_loss"), pyb::arg("grad_A"),
      pyb::arg("grad_theta2"), "Backward of mmnet_train_mse_forward: dL/dA and dL/dtheta2 from dL/dloss [G].");
#endif
}

}  // namespace edgert::py
