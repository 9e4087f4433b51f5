#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>
#include <string>
#include <vector>

#include "edgert/edgert.h"
#include "edgert/edgert.hpp"
#include "edgert/kernels.hpp"
#include "core/fpenv.hpp"

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

// A random training problem: noisy y (posteriors not saturated), A around 0.15 per entry.
struct TrainProblem {
  std::vector<cfloat> H, y, A;
  std::vector<float> sigma2, theta2;
  TrainProblem(const edgert::MMNetShape& s, std::mt19937& rng)
      : H(static_cast<size_t>(s.groups * s.n_rx * s.n_tx)), y(static_cast<size_t>(s.groups * s.batch * s.n_rx)),
        A(static_cast<size_t>(s.layers * s.groups * s.n_tx * s.n_rx)), sigma2(static_cast<size_t>(s.groups * s.batch)),
        theta2(static_cast<size_t>(s.layers * s.groups * s.n_tx)) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto cnormal = [&](float scale) { return scale * cfloat(normal(rng), normal(rng)); };
    for (auto& v : H) v = cnormal(0.4f);
    for (auto& v : y) v = cnormal(0.8f);
    for (auto& v : A) v = cnormal(0.15f);
    for (auto& v : sigma2) v = 0.2f + 0.1f * std::abs(normal(rng));
    for (auto& v : theta2) v = 0.8f + 0.2f * std::abs(normal(rng));
  }
};

// 1e-30 * 1e-10 = 1e-40 is below the smallest normal float: a denormal, or 0 when the thread flushes.
float denormal_product() {
  volatile float a = 1e-30f, b = 1e-10f;  // volatile: computed at run time, under the thread's mode
  return a * b;
}

constexpr bool kFlushSupported =
#if defined(__x86_64__) || defined(_M_X64) || (defined(__aarch64__) && defined(__GNUC__))
    true;
#else
    false;
#endif

// The MMNet kernels flush denormals on the threads that run them (fpenv.hpp: Intel cores slow down
// 3-7x on the denoiser's tiny weights otherwise) but hand the caller's mode back unchanged, whichever
// it was.
TEST(FlushDenormals, KernelsFlushInsideAndRestoreTheCallersMode) {
  ASSERT_NE(denormal_product(), 0.0f) << "the test expects the platform default to keep denormals";
  {
    const edgert::detail::FlushDenormals flush;
    if (kFlushSupported) EXPECT_EQ(denormal_product(), 0.0f);
  }
  EXPECT_NE(denormal_product(), 0.0f);

  const cfloat z[2] = {{0.31f, -0.95f}, {3.0f, -3.0f}};
  const float var[2] = {1e-3f, 1e-4f};  // far constellation points: weights around e^-87
  cfloat mean[2];
  float var_out[2];
  const edgert::MMNetShape shape{2, 1, 3, 8, 4, 16};
  std::mt19937 rng(5);
  TrainProblem problem(shape, rng);
  std::vector<cfloat> x_hat(static_cast<size_t>(shape.groups * shape.batch * shape.n_tx));
  const auto run_kernels = [&] {
    ASSERT_EQ(edgert::cpu::gaussian_denoise(z, var, 2, 16, mean, var_out), EDGERT_OK);
    ASSERT_EQ(edgert::cpu::mmnet_detect(shape, problem.H.data(), problem.y.data(), problem.A.data(), nullptr,
                                        problem.theta2.data(), problem.sigma2.data(), false, x_hat.data(), nullptr),
              EDGERT_OK);
  };
  run_kernels();
  EXPECT_NE(denormal_product(), 0.0f) << "a kernel left flush-to-zero on in the caller's thread";
  {
    const edgert::detail::FlushDenormals flush;  // a caller that flushes itself keeps flushing
    run_kernels();
    if (kFlushSupported) EXPECT_EQ(denormal_product(), 0.0f);
  }
  EXPECT_NE(denormal_product(), 0.0f);
}

// The training backward against central finite differences of the training forward, on a noisy
// problem (posteriors not saturated, so the loss is smooth): L = sum(w * xs) for fixed random w.
TEST(MMNetTrain, BackwardMatchesFiniteDifferencesOfTheForward) {
  edgert::MMNetShape s;
  s.layers = 3, s.groups = 2, s.batch = 11, s.n_rx = 6, s.n_tx = 5, s.modulation = 16;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  TrainProblem problem(s, rng);
  // plain references, not a structured binding: lambdas below capture them (C++17)
  const std::vector<cfloat>& H = problem.H;
  const std::vector<cfloat>& y = problem.y;
  const std::vector<cfloat>& A = problem.A;
  const std::vector<float>& sigma2 = problem.sigma2;
  const std::vector<float>& theta2 = problem.theta2;
  const size_t n_xs = static_cast<size_t>(s.layers * s.groups * s.batch * 2 * s.n_tx);
  std::vector<float> weights(n_xs), xs(n_xs), tape(static_cast<size_t>(edgert::cpu::mmnet_tape_size(s)));
  for (auto& v : weights) v = normal(rng);
  auto loss = [&](const std::vector<cfloat>& a, const std::vector<float>& th) {
    std::vector<float> out(n_xs), scratch(tape.size());
    EXPECT_EQ(edgert::cpu::mmnet_train_forward(s, H.data(), y.data(), sigma2.data(), a.data(), th.data(), out.data(),
                                               scratch.data()),
              EDGERT_OK);
    double l = 0;
    for (size_t e = 0; e < n_xs; ++e) l += double(weights[e]) * out[e];
    return l;
  };
  ASSERT_EQ(edgert::cpu::mmnet_train_forward(s, H.data(), y.data(), sigma2.data(), A.data(), theta2.data(), xs.data(),
                                             tape.data()),
            EDGERT_OK);
  std::vector<cfloat> grad_A(A.size());
  std::vector<float> grad_theta2(theta2.size());
  ASSERT_EQ(edgert::cpu::mmnet_train_backward(s, H.data(), y.data(), sigma2.data(), A.data(), theta2.data(), xs.data(),
                                              tape.data(), weights.data(), grad_A.data(), grad_theta2.data()),
            EDGERT_OK);
  const float eps = 2e-3f;
  double worst = 0, scale = 0;
  for (size_t e = 0; e < A.size(); e += 11) {  // a spread of entries over layers, groups, rows and columns
    for (int part = 0; part < 2; ++part) {
      const cfloat step = part == 0 ? cfloat(eps, 0.0f) : cfloat(0.0f, eps);
      auto plus = A, minus = A;
      plus[e] += step, minus[e] -= step;
      const double numeric = (loss(plus, theta2) - loss(minus, theta2)) / (2.0 * eps);
      const double analytic = part == 0 ? grad_A[e].real() : grad_A[e].imag();
      worst = std::max(worst, std::abs(numeric - analytic));
      scale = std::max(scale, std::abs(analytic));
    }
  }
  for (size_t e = 0; e < theta2.size(); e += 3) {
    auto plus = theta2, minus = theta2;
    plus[e] += eps, minus[e] -= eps;
    const double numeric = (loss(A, plus) - loss(A, minus)) / (2.0 * eps);
    worst = std::max(worst, std::abs(numeric - double(grad_theta2[e])));
    scale = std::max(scale, std::abs(double(grad_theta2[e])));
  }
  ASSERT_GT(scale, 0.1);
  // measured 1e-4 of the largest gradient (float32 rounding of the differences, O(eps^2) truncation)
  RecordProperty("relative_error", std::to_string(worst / scale));
  EXPECT_LT(worst, 3e-3 * scale) << "largest |numeric - analytic| " << worst << " of gradients up to " << scale;
}

// The fused loss (mmnet_train_mse_*) against the plain forward/backward: loss[g] from the estimates
// themselves, and the gradients equal those of mmnet_train_backward given dL/dxs of that loss.
// B = 13 leaves a partial 8-vector tile, whose padded lanes must not enter the loss.
TEST(MMNetTrain, FusedLossMatchesThePlainForwardAndBackward) {
  edgert::MMNetShape s;
  s.layers = 3, s.groups = 2, s.batch = 13, s.n_rx = 7, s.n_tx = 5, s.modulation = 64;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const TrainProblem p(s, rng);
  const cfloat *H = p.H.data(), *y = p.y.data(), *A = p.A.data();
  const float *sigma2 = p.sigma2.data(), *theta2 = p.theta2.data();
  const size_t n_a = p.A.size();
  const size_t per_layer = static_cast<size_t>(s.groups * s.batch * 2 * s.n_tx), n_xs = s.layers * per_layer;
  const size_t n_tape = static_cast<size_t>(edgert::cpu::mmnet_tape_size(s));
  std::vector<float> target(per_layer), xs(n_xs), xs_fused(n_xs), tape(n_tape), tape_fused(n_tape);
  for (auto& v : target) v = normal(rng);
  std::vector<float> loss(static_cast<size_t>(s.groups));
  ASSERT_EQ(edgert::cpu::mmnet_train_forward(s, H, y, sigma2, A, theta2, xs.data(), tape.data()), EDGERT_OK);
  ASSERT_EQ(edgert::cpu::mmnet_train_mse_forward(s, H, y, sigma2, A, theta2, target.data(), xs_fused.data(),
                                                 tape_fused.data(), loss.data()),
            EDGERT_OK);
  EXPECT_EQ(xs_fused, xs);
  EXPECT_EQ(tape_fused, tape);
  const std::vector<float> grad_loss{0.7f, -1.3f};
  const size_t per_group = static_cast<size_t>(s.batch * 2 * s.n_tx);
  std::vector<float> grad_xs(n_xs);
  for (int64_t g = 0; g < s.groups; ++g) {
    double sum = 0;
    for (int64_t t = 0; t < s.layers; ++t) {
      for (size_t e = 0; e < per_group; ++e) {
        const size_t at = t * per_layer + g * per_group + e;
        const double d = double(xs[at]) - target[g * per_group + e];
        sum += d * d;
        grad_xs[at] = static_cast<float>(2.0 * grad_loss[g] * d / (s.layers * s.batch));
      }
    }
    EXPECT_NEAR(loss[g], sum / (s.layers * s.batch), 1e-5 * sum / (s.layers * s.batch)) << "group " << g;
  }
  std::vector<cfloat> grad_A(n_a), grad_A_fused(n_a);
  std::vector<float> grad_theta2(p.theta2.size()), grad_theta2_fused(p.theta2.size());
  ASSERT_EQ(edgert::cpu::mmnet_train_backward(s, H, y, sigma2, A, theta2, xs.data(), tape.data(), grad_xs.data(),
                                              grad_A.data(), grad_theta2.data()),
            EDGERT_OK);
  ASSERT_EQ(edgert::cpu::mmnet_train_mse_backward(s, H, y, sigma2, A, theta2, xs.data(), tape.data(), target.data(),
                                                  grad_loss.data(), grad_A_fused.data(), grad_theta2_fused.data()),
            EDGERT_OK);
  double scale = 0;
  for (const cfloat& v : grad_A) scale = std::max(scale, double(std::abs(v)));
  ASSERT_GT(scale, 0.0);
  for (size_t e = 0; e < n_a; ++e) EXPECT_LT(std::abs(grad_A_fused[e] - grad_A[e]), 1e-5 * scale) << "A entry " << e;
  for (size_t e = 0; e < p.theta2.size(); ++e) {
    EXPECT_NEAR(grad_theta2_fused[e], grad_theta2[e], 1e-5 * (std::abs(grad_theta2[e]) + 1e-3)) << "theta2 entry " << e;
  }
  // a mean over no vectors is refused, nothing written
  edgert::MMNetShape empty = s;
  empty.batch = 0;
  loss.assign(loss.size(), -1.0f);
  EXPECT_EQ(edgert::cpu::mmnet_train_mse_forward(empty, H, y, sigma2, A, theta2, target.data(), xs.data(), tape.data(),
                                                 loss.data()),
            EDGERT_ERR_SHAPE);
  EXPECT_EQ(loss[0], -1.0f);
  EXPECT_EQ(edgert::cpu::mmnet_train_mse_backward(empty, H, y, sigma2, A, theta2, xs.data(), tape.data(), target.data(),
                                                  grad_loss.data(), grad_A.data(), grad_theta2.data()),
            EDGERT_ERR_SHAPE);
  EXPECT_EQ(edgert::cpu::mmnet_train_mse_forward(s, H, y, sigma2, A, theta2, nullptr, xs.data(), tape.data(),
                                                 loss.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
}

TEST(MMNetTrain, RejectsBadShapesAndNoise) {
  edgert::MMNetShape s;
  s.layers = 0, s.groups = 1, s.batch = 1, s.n_rx = 2, s.n_tx = 1;
  std::vector<cfloat> H(2), y(2), A(2);
  std::vector<float> sigma2{0.1f}, theta2{1.0f}, xs(2), tape(16);
  EXPECT_EQ(edgert::cpu::mmnet_train_forward(s, H.data(), y.data(), sigma2.data(), A.data(), theta2.data(), xs.data(),
                                             tape.data()),
            EDGERT_ERR_SHAPE);
  s.layers = 1;
  sigma2[0] = std::nanf("");
  EXPECT_EQ(edgert::cpu::mmnet_train_forward(s, H.data(), y.data(), sigma2.data(), A.data(), theta2.data(), xs.data(),
                                             tape.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
  s.modulation = 8;
  sigma2[0] = 0.1f;
  EXPECT_EQ(edgert::cpu::mmnet_train_forward(s, H.data(), y.data(), sigma2.data(), A.data(), theta2.data(), xs.data(),
                                             tape.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
}
