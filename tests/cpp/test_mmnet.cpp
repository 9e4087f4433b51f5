#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include "edgert/edgert.h"
#include "edgert/edgert.hpp"
#include "edgert/kernels.hpp"

using edgert::cfloat;

namespace {

// A channel with orthogonal columns scaled by 2 (H^H H = 4 I), so A = H^H / 4 is
// its exact pseudo-inverse without a linear-algebra library.
std::vector<cfloat> orthogonal_channel(int64_t nr, int64_t nt) {
  std::vector<cfloat> H(static_cast<size_t>(nr * nt));
  const double pi = std::acos(-1.0);
  for (int64_t j = 0; j < nr; ++j)
    for (int64_t i = 0; i < nt; ++i)  // DFT columns: orthogonal, norm^2 = nr
      H[static_cast<size_t>(j * nt + i)] =
          static_cast<float>(2.0 / std::sqrt(static_cast<double>(nr))) *
          cfloat(static_cast<float>(std::cos(2 * pi * i * j / nr)), static_cast<float>(-std::sin(2 * pi * i * j / nr)));
  return H;
}

}  // namespace

TEST(QamLevels, UnitEnergyAndRejectsUnknownOrders) {
  float levels[8];
  for (int m : {4, 16, 64}) {
    const int k = edgert::qam_levels(m, levels);
    ASSERT_EQ(k * k, m);
    double energy = 0;
    for (int i = 0; i < k; ++i) energy += 2.0 * levels[i] * levels[i] / k;  // re and im axes
    EXPECT_NEAR(energy, 1.0, 1e-6);
  }
  EXPECT_EQ(edgert::qam_levels(8, levels), 0);
}

TEST(MMNet, PseudoInverseRecoversNoiseFreeSymbols) {
  const int64_t nr = 16, nt = 4, batch = 9, layers = 2;
  const auto H = orthogonal_channel(nr, nt);
  std::vector<cfloat> A(static_cast<size_t>(layers * nt * nr));
  for (int64_t t = 0; t < layers; ++t)
    for (int64_t i = 0; i < nt; ++i)
      for (int64_t j = 0; j < nr; ++j) A[static_cast<size_t>((t * nt + i) * nr + j)] = std::conj(H[j * nt + i]) / 4.0f;
  float levels[8];
  edgert::qam_levels(16, levels);
  std::mt19937 rng(1);
  std::vector<int32_t> truth(static_cast<size_t>(batch * nt));
  std::vector<cfloat> y(static_cast<size_t>(batch * nr));
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<cfloat> x(nt);
    for (int64_t i = 0; i < nt; ++i) {
      const int32_t idx = static_cast<int32_t>(rng() % 16);
      truth[b * nt + i] = idx;
      x[i] = cfloat(levels[idx / 4], levels[idx % 4]);
    }
    for (int64_t j = 0; j < nr; ++j)
      for (int64_t i = 0; i < nt; ++i) y[b * nr + j] += H[j * nt + i] * x[i];
  }
  std::vector<float> theta2(static_cast<size_t>(layers * nt), 1.0f), sigma2(1, 0.0f);
  std::vector<cfloat> x_hat(static_cast<size_t>(batch * nt));
  std::vector<int32_t> decisions(static_cast<size_t>(batch * nt), -1);
  edgert::MMNetShape shape;
  shape.layers = layers;
  shape.groups = 1;
  shape.batch = batch;
  shape.n_rx = nr;
  shape.n_tx = nt;
  shape.modulation = 16;
  ASSERT_EQ(edgert::cpu::mmnet_detect(shape, H.data(), y.data(), A.data(), nullptr, theta2.data(), sigma2.data(), false,
                                      x_hat.data(), decisions.data()),
            EDGERT_OK);
  EXPECT_EQ(decisions, truth);

  // The same through the C API handle, iid form: theta1 = 1/4 makes A = H^H / 4.
  edgert_mmnet_params params = edgert_mmnet_default_params();
  params.n_layers = layers;
  params.n_rx = nr;
  params.n_tx = nt;
  params.iid_form = 1;
  auto det = edgert::make_mmnet(params);
  const std::vector<float> theta1(static_cast<size_t>(layers), 0.25f);
  edgert::check(edgert_mmnet_set(det.get(), reinterpret_cast<const float*>(H.data()), sigma2.data(), theta1.data(),
                                 theta2.data()));
  std::fill(decisions.begin(), decisions.end(), -1);
  edgert::check(edgert_mmnet_detect(det.get(), reinterpret_cast<const float*>(y.data()), batch,
                                    reinterpret_cast<float*>(x_hat.data()), decisions.data()));
  EXPECT_EQ(decisions, truth);
}

TEST(MMNet, CApiRejectsBadArgumentsAndKeepsParameters) {
  edgert_mmnet* det = nullptr;
  edgert_mmnet_params params = edgert_mmnet_default_params();
  params.modulation = static_cast<edgert_modulation>(32);
  EXPECT_EQ(edgert_mmnet_create(&params, &det), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(det, nullptr);
  params = edgert_mmnet_default_params();
  params.n_tx = 0;
  EXPECT_EQ(edgert_mmnet_create(&params, &det), EDGERT_ERR_SHAPE);

  params = edgert_mmnet_default_params();
  params.n_layers = 1;
  params.n_rx = 2;
  params.n_tx = 1;
  params.iid_form = 1;
  ASSERT_EQ(edgert_mmnet_create(&params, &det), EDGERT_OK);
  float y[4] = {1, 0, 1, 0}, x[2] = {0, 0};
  EXPECT_EQ(edgert_mmnet_detect(det, y, 1, x, nullptr), EDGERT_ERR_INVALID_ARGUMENT);  // not set yet
  const float H[4] = {1, 0, 1, 0}, sigma2_ok[1] = {0.0f}, theta1[1] = {0.5f}, theta2[1] = {1.0f};
  ASSERT_EQ(edgert_mmnet_set(det, H, sigma2_ok, theta1, theta2), EDGERT_OK);
  const float sigma2_bad[1] = {NAN};
  EXPECT_EQ(edgert_mmnet_set(det, H, sigma2_bad, theta1, theta2), EDGERT_ERR_INVALID_ARGUMENT);
  // The previous parameters are still in place: y = H * 1 detects as the largest QAM16 level pair.
  int32_t decision = -1;
  ASSERT_EQ(edgert_mmnet_detect(det, y, 1, x, &decision), EDGERT_OK);
  EXPECT_TRUE(std::isfinite(x[0]) && std::isfinite(x[1]));
  EXPECT_EQ(edgert_mmnet_detect(det, y, -1, x, nullptr), EDGERT_ERR_SHAPE);
  edgert_mmnet_free(det);
  edgert_mmnet_free(nullptr);
}

TEST(GaussianDenoise, TinyVarianceSnapsAndBadInputIsRejected) {
  const cfloat z[3] = {{0.31f, -0.95f}, {5.0f, 5.0f}, {-0.2f, 0.1f}};
  const float var[3] = {0.0f, 1e-20f, 1e-12f};
  cfloat mean[3];
  float var_out[3];
  ASSERT_EQ(edgert::cpu::gaussian_denoise(z, var, 3, 16, mean, var_out), EDGERT_OK);
  float levels[8];
  edgert::qam_levels(16, levels);
  EXPECT_FLOAT_EQ(mean[0].real(), levels[2]);
  EXPECT_FLOAT_EQ(mean[0].imag(), levels[0]);
  EXPECT_FLOAT_EQ(mean[1].real(), levels[3]);
  for (float v : var_out) EXPECT_TRUE(std::isfinite(v) && v >= 0);
  const float bad_var[1] = {-1.0f};
  EXPECT_EQ(edgert::cpu::gaussian_denoise(z, bad_var, 1, 16, mean, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert::cpu::gaussian_denoise(z, var, 1, 32, mean, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
}
