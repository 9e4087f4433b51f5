// The edgert_mmnet_* C API: a detector that owns its parameters for G channels.
#include <complex>
#include <cstring>
#include <new>
#include <vector>

#include "core/error.hpp"
#include "edgert/edgert.h"
#include "edgert/kernels.hpp"

using edgert::cfloat;
using edgert::detail::fail;

struct edgert_mmnet {
  edgert_mmnet_params params{};
  std::vector<cfloat> H, A;
  std::vector<float> theta1, theta2, sigma2;
  bool ready = false;
};

extern "C" edgert_mmnet_params edgert_mmnet_default_params(void) {
  edgert_mmnet_params p{};
  p.n_layers = 10;
  p.n_rx = 64;
  p.n_tx = 16;
  p.n_groups = 1;
  p.modulation = EDGERT_QAM16;
  p.iid_form = 0;
  return p;
}

extern "C" edgert_status edgert_mmnet_create(const edgert_mmnet_params* params, edgert_mmnet** out) {
  if (out == nullptr || params == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_create: null argument");
  *out = nullptr;
  const edgert_mmnet_params& p = *params;
  if (p.n_layers <= 0 || p.n_rx <= 0 || p.n_tx <= 0 || p.n_groups <= 0) {
    return fail(EDGERT_ERR_SHAPE, "mmnet_create: need positive T, Nr, Nt, G; got T=%d Nr=%d Nt=%d G=%d", p.n_layers,
                p.n_rx, p.n_tx, p.n_groups);
  }
  if (p.n_rx > 4096 || p.n_tx > 4096 || p.n_layers > 1024) {
    return fail(EDGERT_ERR_SHAPE, "mmnet_create: T=%d Nr=%d Nt=%d exceed the limits (1024, 4096, 4096)", p.n_layers,
                p.n_rx, p.n_tx);
  }
  float levels[8];
  if (edgert::qam_levels(p.modulation, levels) == 0) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_create: modulation must be 4, 16 or 64, got %d", p.modulation);
  }
  if (p.iid_form != 0 && p.iid_form != 1) return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_create: iid_form must be 0 or 1");
  auto* det = new (std::nothrow) edgert_mmnet();
  if (det == nullptr) return fail(EDGERT_ERR_OUT_OF_MEMORY, "mmnet_create: out of memory");
  det->params = p;
  *out = det;
  return EDGERT_OK;
}

extern "C" void edgert_mmnet_free(edgert_mmnet* det) { delete det; }

extern "C" edgert_status edgert_mmnet_set(edgert_mmnet* det, const float* H, const float* sigma2,
                                          const float* A_or_theta1, const float* theta2) {
  if (det == nullptr || H == nullptr || sigma2 == nullptr || A_or_theta1 == nullptr || theta2 == nullptr) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_set: null argument");
  }
  const edgert_mmnet_params& p = det->params;
  const size_t g = static_cast<size_t>(p.n_groups), t = static_cast<size_t>(p.n_layers);
  const size_t nr = static_cast<size_t>(p.n_rx), nt = static_cast<size_t>(p.n_tx);
  for (size_t i = 0; i < g; ++i) {
    if (!(sigma2[i] >= 0.0f) || sigma2[i] == INFINITY) {
      return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_set: sigma2[%zu] = %g (need finite >= 0)", i, sigma2[i]);
    }
  }
  // Build the new parameters aside and swap them in only when complete, so a
  // failure (allocation) leaves the detector's previous parameters in place.
  try {
    const cfloat* h = reinterpret_cast<const cfloat*>(H);
    std::vector<cfloat> new_h(h, h + g * nr * nt), new_a;
    std::vector<float> new_theta1, new_theta2(theta2, theta2 + t * g * nt), new_sigma2(sigma2, sigma2 + g);
    if (p.iid_form) {
      new_theta1.assign(A_or_theta1, A_or_theta1 + t * g);
    } else {
      const cfloat* a = reinterpret_cast<const cfloat*>(A_or_theta1);
      new_a.assign(a, a + t * g * nt * nr);
    }
    det->H.swap(new_h);
    det->A.swap(new_a);
    det->theta1.swap(new_theta1);
    det->theta2.swap(new_theta2);
    det->sigma2.swap(new_sigma2);
  } catch (const std::bad_alloc&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "mmnet_set: out of memory");
  }
  det->ready = true;
  return EDGERT_OK;
}

extern "C" edgert_status edgert_mmnet_detect(edgert_mmnet* det, const float* y, int64_t batch, float* x_hat,
                                             int32_t* decisions) {
  if (det == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: null detector");
  if (!det->ready) return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: parameters not set (call edgert_mmnet_set)");
  if (batch < 0) return fail(EDGERT_ERR_SHAPE, "mmnet_detect: negative batch %lld", (long long)batch);
  const edgert_mmnet_params& p = det->params;
  edgert::MMNetShape shape;
  shape.layers = p.n_layers;
  shape.groups = p.n_groups;
  shape.batch = batch;
  shape.n_rx = p.n_rx;
  shape.n_tx = p.n_tx;
  shape.modulation = p.modulation;
  return edgert::cpu::mmnet_detect(shape, det->H.data(), reinterpret_cast<const cfloat*>(y),
                                   p.iid_form ? nullptr : det->A.data(), p.iid_form ? det->theta1.data() : nullptr,
                                   det->theta2.data(), det->sigma2.data(), false, reinterpret_cast<cfloat*>(x_hat),
                                   decisions);
}
