// The backend registry and the C API's hot paths on a chosen backend:
// resolution rules (CPU, CUDA, AUTO), parity of edgert_adaptive_conv,
// edgert_block_average, edgert_gaussian_denoise and edgert_sparse_*_on with
// the CPU kernels and with small hand-computed references, edge shapes, and
// invalid arguments (exact status, outputs untouched).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "adaptive_conv_naive.hpp"
#include "edgert/edgert.h"
#include "edgert/kernels.hpp"

namespace {

// Not a backend, but a representable value (see *_MAX_ENUM in edgert.h): no sanitizer objects.
constexpr edgert_backend kBadBackend = static_cast<edgert_backend>(3);
constexpr float kSentinel = -7.25f;

bool cuda_usable() {
  edgert_backend_info info{};
  EXPECT_EQ(edgert_backend_query(EDGERT_BACKEND_CUDA, &info), EDGERT_OK);
  return info.usable != 0;
}

bool contains(const char* text, const std::string& part) { return std::string(text).find(part) != std::string::npos; }

std::vector<float> normal_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

bool all_equal(const std::vector<float>& v, float value) {
  return std::all_of(v.begin(), v.end(), [&](float x) { return x == value; });
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

// ---- the registry ----------------------------------------------------------------------

TEST(BackendRegistry, SelectResolvesCpuAndAuto) {
  std::vector<float> a(4), b(4);
  const void* buffers[] = {a.data(), nullptr, b.data()};
  edgert_backend chosen = EDGERT_BACKEND_CUDA;
  ASSERT_EQ(edgert_backend_select(EDGERT_BACKEND_CPU, buffers, 3, &chosen), EDGERT_OK);
  EXPECT_EQ(chosen, EDGERT_BACKEND_CPU);
  chosen = EDGERT_BACKEND_CUDA;
  // Host buffers: AUTO runs on the CPU whether or not CUDA is usable.
  ASSERT_EQ(edgert_backend_select(EDGERT_BACKEND_AUTO, buffers, 3, &chosen), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(chosen, EDGERT_BACKEND_CPU);
  chosen = EDGERT_BACKEND_CUDA;
  ASSERT_EQ(edgert_backend_select(EDGERT_BACKEND_AUTO, nullptr, 0, &chosen), EDGERT_OK);
  EXPECT_EQ(chosen, EDGERT_BACKEND_CPU);
}

TEST(BackendRegistry, SelectRejectsBadArgumentsAndKeepsChosen) {
  const void* buffers[] = {nullptr};
  edgert_backend chosen = EDGERT_BACKEND_AUTO;
  EXPECT_EQ(edgert_backend_select(kBadBackend, buffers, 1, &chosen), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(edgert_last_error(), "unknown backend 3")) << edgert_last_error();
  EXPECT_EQ(edgert_backend_select(EDGERT_BACKEND_CPU, nullptr, 2, &chosen), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(edgert_last_error(), "buffers is NULL with count 2")) << edgert_last_error();
  EXPECT_EQ(chosen, EDGERT_BACKEND_AUTO);
  EXPECT_EQ(edgert_backend_select(EDGERT_BACKEND_CPU, buffers, 1, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
}

TEST(BackendRegistry, CudaWithoutADeviceIsUnavailable) {
  edgert_backend_info info{};
  ASSERT_EQ(edgert_backend_query(EDGERT_BACKEND_CUDA, &info), EDGERT_OK);
  if (info.usable) GTEST_SKIP() << "CUDA is usable here: " << info.detail;
  std::vector<float> host(4, 1.0f);
  const void* buffers[] = {host.data()};
  edgert_backend chosen = EDGERT_BACKEND_AUTO;
  EXPECT_EQ(edgert_backend_select(EDGERT_BACKEND_CUDA, buffers, 1, &chosen), EDGERT_ERR_BACKEND_UNAVAILABLE);
  EXPECT_EQ(chosen, EDGERT_BACKEND_AUTO);
  EXPECT_TRUE(contains(edgert_last_error(), "EDGERT_BACKEND_CUDA requested")) << edgert_last_error();
  if (!info.compiled) {
    EXPECT_TRUE(contains(edgert_last_error(), "built without CUDA kernels")) << edgert_last_error();
  } else {
    EXPECT_TRUE(contains(edgert_last_error(), "no device is usable")) << edgert_last_error();
  }
}

TEST(BackendRegistry, QueryAndNames) {
  edgert_backend_info info{};
  info.compiled = 42;
  EXPECT_EQ(edgert_backend_query(EDGERT_BACKEND_AUTO, &info), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(edgert_last_error(), "AUTO is a choice")) << edgert_last_error();
  EXPECT_EQ(info.compiled, 42);  // untouched on failure
  EXPECT_STREQ(edgert_backend_name(EDGERT_BACKEND_CPU), "EDGERT_BACKEND_CPU");
  EXPECT_STREQ(edgert_backend_name(EDGERT_BACKEND_CUDA), "EDGERT_BACKEND_CUDA");
  EXPECT_STREQ(edgert_backend_name(EDGERT_BACKEND_AUTO), "EDGERT_BACKEND_AUTO");
  EXPECT_STREQ(edgert_backend_name(kBadBackend), "?");
}

// ---- block averaging ----------------------------------------------------------------------

TEST(CApiBlockAverage, HandComputedExample) {
  // grad [1, 1, 2, 3], block 2: blocks {1,-2,-4,5} and {3,-6} (a partial edge block).
  const std::vector<float> grad = {1, -2, 3, -4, 5, -6};
  for (edgert_backend b : {EDGERT_BACKEND_CPU, EDGERT_BACKEND_AUTO}) {
    std::vector<float> out(2, kSentinel);
    ASSERT_EQ(edgert_block_average(b, nullptr, grad.data(), 1, 1, 2, 3, 2, out.data()), EDGERT_OK)
        << edgert_last_error();
    EXPECT_EQ(out[0], 3.0f);
    EXPECT_EQ(out[1], 4.5f);
  }
}

TEST(CApiBlockAverage, MatchesCpuKernelOnEdgeShapes) {
  // n, c, h, w, block: batch 1, odd sizes, blocks larger than the frame, one pixel.
  const int64_t shapes[][5] = {{1, 3, 17, 33, 16}, {2, 1, 5, 7, 3}, {1, 4, 3, 2, 8}, {3, 2, 1, 1, 1}, {1, 5, 31, 9, 4}};
  uint32_t seed = 1;
  for (const auto& s : shapes) {
    const int64_t rows = (s[2] + s[4] - 1) / s[4], cols = (s[3] + s[4] - 1) / s[4];
    const auto grad = normal_floats(static_cast<size_t>(s[0] * s[1] * s[2] * s[3]), seed++);
    std::vector<float> want(static_cast<size_t>(s[0] * rows * cols), kSentinel), got = want, autod = want;
    ASSERT_EQ(edgert::cpu::block_average(grad.data(), s[0], s[1], s[2], s[3], s[4], want.data()), EDGERT_OK);
    ASSERT_EQ(edgert_block_average(EDGERT_BACKEND_CPU, nullptr, grad.data(), s[0], s[1], s[2], s[3], s[4], got.data()),
              EDGERT_OK);
    ASSERT_EQ(edgert_block_average(EDGERT_BACKEND_AUTO, nullptr, grad.data(), s[0], s[1], s[2], s[3], s[4],
                                   autod.data()),
              EDGERT_OK);
    EXPECT_TRUE(same_bits(got, want));
    EXPECT_TRUE(same_bits(autod, want));
    EXPECT_FALSE(all_equal(got, kSentinel));
  }
}

TEST(CApiBlockAverage, EmptyAndChannelFreeInputs) {
  // No output elements: nothing is touched, NULL buffers are fine.
  EXPECT_EQ(edgert_block_average(EDGERT_BACKEND_AUTO, nullptr, nullptr, 0, 3, 8, 8, 4, nullptr), EDGERT_OK);
  EXPECT_EQ(edgert_block_average(EDGERT_BACKEND_CPU, nullptr, nullptr, 2, 3, 0, 8, 4, nullptr), EDGERT_OK);
  // No channels: the mean over an empty set is defined as 0.
  std::vector<float> out(4, kSentinel);
  ASSERT_EQ(edgert_block_average(EDGERT_BACKEND_CPU, nullptr, nullptr, 1, 0, 3, 3, 2, out.data()), EDGERT_OK);
  EXPECT_TRUE(all_equal(out, 0.0f));
}

TEST(CApiBlockAverage, RejectsBadArgumentsWithoutWriting) {
  const std::vector<float> grad(16, 1.0f);
  std::vector<float> out(4, kSentinel);
  EXPECT_EQ(edgert_block_average(EDGERT_BACKEND_CPU, nullptr, nullptr, 1, 1, 4, 4, 2, out.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert_block_average(EDGERT_BACKEND_CPU, nullptr, grad.data(), 1, 1, 4, 4, 2, nullptr),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert_block_average(EDGERT_BACKEND_AUTO, nullptr, grad.data(), 1, 1, 4, 4, 0, out.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert_block_average(EDGERT_BACKEND_CPU, nullptr, grad.data(), 1, -1, 4, 4, 2, out.data()),
            EDGERT_ERR_SHAPE);
  EXPECT_EQ(edgert_block_average(kBadBackend, nullptr, grad.data(), 1, 1, 4, 4, 2, out.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(edgert_last_error(), "block_average: unknown backend 3")) << edgert_last_error();
  if (!cuda_usable()) {
    EXPECT_EQ(edgert_block_average(EDGERT_BACKEND_CUDA, nullptr, grad.data(), 1, 1, 4, 4, 2, out.data()),
              EDGERT_ERR_BACKEND_UNAVAILABLE);
    EXPECT_TRUE(contains(edgert_last_error(), "block_average: EDGERT_BACKEND_CUDA requested")) << edgert_last_error();
  }
  EXPECT_TRUE(all_equal(out, kSentinel));
}

// ---- adaptive convolution -------------------------------------------------------------------

TEST(CApiAdaptiveConv, HandComputedExamples) {
  // One 2x2 patch of ones, an all-ones kernel: every pixel sees exactly the 4 pixels of its patch.
  {
    const std::vector<float> x(4, 1.0f), k(9, 1.0f), b = {0.5f};
    std::vector<float> out(4, kSentinel);
    ASSERT_EQ(edgert_adaptive_conv(EDGERT_BACKEND_AUTO, nullptr, x.data(), k.data(), b.data(), 1, 1, 2, 2, 1, 2,
                                   EDGERT_ACTIVATION_NONE, out.data()),
              EDGERT_OK)
        << edgert_last_error();
    EXPECT_TRUE(all_equal(out, 4.5f));
    const std::vector<float> negative_bias = {-5.0f};
    ASSERT_EQ(edgert_adaptive_conv(EDGERT_BACKEND_CPU, nullptr, x.data(), k.data(), negative_bias.data(), 1, 1, 2, 2,
                                   1, 2, EDGERT_ACTIVATION_RELU, out.data()),
              EDGERT_OK);
    EXPECT_TRUE(all_equal(out, 0.0f));
  }
  // Patch 1 on a 2x3 frame: only the centre tap ever sees a pixel (per-patch kernels 2, 3, ...).
  {
    const std::vector<float> x = {1, 2, 3, 4, 5, 6};
    std::vector<float> k(6 * 9, 100.0f), b(6);
    for (int p = 0; p < 6; ++p) {
      k[static_cast<size_t>(p * 9 + 4)] = static_cast<float>(p + 2);
      b[static_cast<size_t>(p)] = static_cast<float>(-p);
    }
    std::vector<float> out(6, kSentinel);
    ASSERT_EQ(edgert_adaptive_conv(EDGERT_BACKEND_CPU, nullptr, x.data(), k.data(), b.data(), 1, 1, 2, 3, 1, 1,
                                   EDGERT_ACTIVATION_NONE, out.data()),
              EDGERT_OK);
    for (int p = 0; p < 6; ++p) EXPECT_EQ(out[static_cast<size_t>(p)], x[static_cast<size_t>(p)] * (p + 2) - p) << p;
  }
}

TEST(CApiAdaptiveConv, MatchesCpuKernelAndReferenceOnEdgeShapes) {
  // n, c_in, h, w, f, patch, relu: batch 1, odd sizes, F on and off the vector paths.
  const int64_t cases[][7] = {{1, 3, 7, 11, 8, 5, 1}, {2, 2, 5, 5, 3, 2, 0}, {1, 1, 1, 1, 16, 5, 1},
                              {1, 3, 9, 4, 5, 3, 0},  {3, 1, 6, 7, 32, 4, 1}};
  uint32_t seed = 10;
  for (const auto& c : cases) {
    const int64_t n = c[0], ci = c[1], h = c[2], w = c[3], f = c[4], p = c[5];
    const int64_t gh = (h + p - 1) / p, gw = (w + p - 1) / p;
    const auto x = normal_floats(static_cast<size_t>(n * ci * h * w), seed++);
    const auto k = normal_floats(static_cast<size_t>(n * gh * gw * f * ci * 9), seed++, 0.3f);
    const auto b = normal_floats(static_cast<size_t>(n * gh * gw * f), seed++);
    const edgert_activation act = c[6] ? EDGERT_ACTIVATION_RELU : EDGERT_ACTIVATION_NONE;
    std::vector<float> want(static_cast<size_t>(n * f * h * w), kSentinel), got = want;
    ASSERT_EQ(edgert::cpu::adaptive_conv(x.data(), k.data(), b.data(), n, ci, h, w, f, p, act, want.data()),
              EDGERT_OK);
    ASSERT_EQ(edgert_adaptive_conv(EDGERT_BACKEND_AUTO, nullptr, x.data(), k.data(), b.data(), n, ci, h, w, f, p, act,
                                   got.data()),
              EDGERT_OK)
        << edgert_last_error();
    EXPECT_TRUE(same_bits(got, want));
    const auto ref = adaptive_conv_naive(x, k, b, n, ci, h, w, f, p, c[6] != 0);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], ref[i], 1e-4f * (1 + std::fabs(ref[i]))) << i;
  }
}

TEST(CApiAdaptiveConv, RejectsBadArgumentsWithoutWriting) {
  const std::vector<float> x(2 * 25, 1.0f), k(4 * 2 * 9, 0.5f), b(4, 0.0f);
  std::vector<float> out(4 * 25, kSentinel);
  auto call = [&](edgert_backend be, const float* xp, int64_t h, int64_t patch, int act, float* o) {
    return edgert_adaptive_conv(be, nullptr, xp, k.data(), b.data(), 1, 2, h, 5, 4, patch,
                                static_cast<edgert_activation>(act), o);
  };
  EXPECT_EQ(call(EDGERT_BACKEND_CPU, x.data(), 5, 0, 1, out.data()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(EDGERT_BACKEND_CPU, x.data(), 5, 257, 1, out.data()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(EDGERT_BACKEND_AUTO, x.data(), -5, 5, 1, out.data()), EDGERT_ERR_SHAPE);
  EXPECT_EQ(call(EDGERT_BACKEND_AUTO, x.data(), 5, 5, 2, out.data()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(EDGERT_BACKEND_AUTO, nullptr, 5, 5, 1, out.data()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(EDGERT_BACKEND_CPU, x.data(), 5, 5, 1, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(kBadBackend, x.data(), 5, 5, 1, out.data()), EDGERT_ERR_INVALID_ARGUMENT);
  if (!cuda_usable()) {
    EXPECT_EQ(call(EDGERT_BACKEND_CUDA, x.data(), 5, 5, 1, out.data()), EDGERT_ERR_BACKEND_UNAVAILABLE);
  }
  EXPECT_TRUE(all_equal(out, kSentinel));
  // Empty: no output elements, NULL buffers allowed.
  EXPECT_EQ(edgert_adaptive_conv(EDGERT_BACKEND_AUTO, nullptr, nullptr, nullptr, nullptr, 0, 3, 5, 5, 8, 5,
                                 EDGERT_ACTIVATION_RELU, nullptr),
            EDGERT_OK);
  EXPECT_EQ(edgert_adaptive_conv(EDGERT_BACKEND_CPU, nullptr, nullptr, nullptr, nullptr, 1, 3, 5, 5, 0, 5,
                                 EDGERT_ACTIVATION_RELU, nullptr),
            EDGERT_OK);
}

// ---- the Gaussian denoiser ------------------------------------------------------------------

TEST(CApiGaussianDenoise, QpskClosedForm) {
  // QAM4, per axis levels +-a (a = 1/sqrt(2)), u = a0 + N(0, v/2):
  // E[a0 | u] = a tanh(2 a u / v), Var = a^2 - mean^2.
  const double a = std::sqrt(0.5);
  const std::vector<float> z = {0.3f, -0.2f, 1.5f, 0.0f, -0.7f, 0.7f, 0.0f, 0.0f};
  const std::vector<float> var = {1.0f, 0.25f, 2.0f, 0.5f};
  std::vector<float> mean(8, kSentinel), var_out(4, kSentinel);
  ASSERT_EQ(edgert_gaussian_denoise(EDGERT_BACKEND_AUTO, nullptr, z.data(), var.data(), 4, EDGERT_QAM4, mean.data(),
                                    var_out.data()),
            EDGERT_OK)
      << edgert_last_error();
  for (size_t i = 0; i < 4; ++i) {
    double total = 0;
    for (size_t axis = 0; axis < 2; ++axis) {
      const double m = a * std::tanh(2 * a * z[2 * i + axis] / var[i]);
      EXPECT_NEAR(mean[2 * i + axis], m, 1e-5) << i << "/" << axis;
      total += a * a - m * m;
    }
    EXPECT_NEAR(var_out[i], total, 1e-5) << i;
  }
  EXPECT_EQ(mean[6], 0.0f);  // z = 0: symmetric posterior
  EXPECT_EQ(mean[7], 0.0f);
}

TEST(CApiGaussianDenoise, MatchesCpuKernelOnEveryOrder) {
  for (edgert_modulation m : {EDGERT_QAM4, EDGERT_QAM16, EDGERT_QAM64}) {
    for (int64_t n : {1, 7, 1031}) {  // one element, odd, past one 256-element chunk
      const auto z = normal_floats(static_cast<size_t>(2 * n), static_cast<uint32_t>(m + n));
      auto var = normal_floats(static_cast<size_t>(n), static_cast<uint32_t>(3 * m + n));
      for (float& v : var) v = v * v * 0.2f;  // >= 0, some tiny
      std::vector<float> want_mean(static_cast<size_t>(2 * n)), want_var(static_cast<size_t>(n));
      ASSERT_EQ(edgert::cpu::gaussian_denoise(reinterpret_cast<const edgert::cfloat*>(z.data()), var.data(), n, m,
                                              reinterpret_cast<edgert::cfloat*>(want_mean.data()), want_var.data()),
                EDGERT_OK);
      std::vector<float> mean(static_cast<size_t>(2 * n), kSentinel), var_out(static_cast<size_t>(n), kSentinel);
      ASSERT_EQ(edgert_gaussian_denoise(EDGERT_BACKEND_CPU, nullptr, z.data(), var.data(), n, m, mean.data(),
                                        var_out.data()),
                EDGERT_OK);
      EXPECT_TRUE(same_bits(mean, want_mean)) << m << " " << n;
      EXPECT_TRUE(same_bits(var_out, want_var)) << m << " " << n;
      std::vector<float> mean_only(static_cast<size_t>(2 * n), kSentinel);  // variance not requested
      ASSERT_EQ(edgert_gaussian_denoise(EDGERT_BACKEND_AUTO, nullptr, z.data(), var.data(), n, m, mean_only.data(),
                                        nullptr),
                EDGERT_OK);
      EXPECT_TRUE(same_bits(mean_only, want_mean));
    }
  }
}

TEST(CApiGaussianDenoise, RejectsBadArgumentsWithoutWriting) {
  const std::vector<float> z = {0.1f, 0.2f, 0.3f, 0.4f}, var = {0.5f, 0.5f};
  const std::vector<float> bad_var = {0.5f, NAN};
  std::vector<float> mean(4, kSentinel), var_out(2, kSentinel);
  auto call = [&](edgert_backend be, const float* zp, const float* vp, int64_t n, int m, float* mp) {
    return edgert_gaussian_denoise(be, nullptr, zp, vp, n, static_cast<edgert_modulation>(m), mp, var_out.data());
  };
  EXPECT_EQ(call(EDGERT_BACKEND_CPU, z.data(), var.data(), 2, 32, mean.data()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(EDGERT_BACKEND_AUTO, z.data(), var.data(), -1, 16, mean.data()), EDGERT_ERR_SHAPE);
  EXPECT_EQ(call(EDGERT_BACKEND_AUTO, nullptr, var.data(), 2, 16, mean.data()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(EDGERT_BACKEND_AUTO, z.data(), var.data(), 2, 16, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(call(EDGERT_BACKEND_CPU, z.data(), bad_var.data(), 2, 16, mean.data()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(edgert_last_error(), "element 1")) << edgert_last_error();
  EXPECT_EQ(call(kBadBackend, z.data(), var.data(), 2, 16, mean.data()), EDGERT_ERR_INVALID_ARGUMENT);
  if (!cuda_usable()) {
    EXPECT_EQ(call(EDGERT_BACKEND_CUDA, z.data(), var.data(), 2, 16, mean.data()), EDGERT_ERR_BACKEND_UNAVAILABLE);
  }
  EXPECT_TRUE(all_equal(mean, kSentinel));
  EXPECT_TRUE(all_equal(var_out, kSentinel));
  EXPECT_EQ(call(EDGERT_BACKEND_AUTO, nullptr, nullptr, 0, 16, nullptr), EDGERT_OK);  // empty
}

// ---- sparse patch / gather on a backend -------------------------------------------------------

TEST(CApiSparseOn, MatchesTheCpuEntryPoints) {
  const std::vector<uint32_t> idx = {0, 3, 4, 9};
  const std::vector<float> values = {0.5f, -1.0f, 2.25f, 8.0f};
  std::vector<float> a(10), b(10);
  for (size_t i = 0; i < a.size(); ++i) a[i] = b[i] = static_cast<float>(i) * 0.75f;
  for (edgert_backend be : {EDGERT_BACKEND_CPU, EDGERT_BACKEND_AUTO}) {
    ASSERT_EQ(edgert_sparse_patch(a.data(), EDGERT_F32, 10, idx.data(), EDGERT_U32, values.data(), EDGERT_F32, 4,
                                  EDGERT_PATCH_ADD),
              EDGERT_OK);
    ASSERT_EQ(edgert_sparse_patch_on(be, nullptr, b.data(), EDGERT_F32, 10, idx.data(), EDGERT_U32, values.data(),
                                     EDGERT_F32, 4, EDGERT_PATCH_ADD),
              EDGERT_OK);
    EXPECT_TRUE(same_bits(a, b));
    std::vector<float> got(4, kSentinel);
    ASSERT_EQ(edgert_sparse_gather_on(be, nullptr, b.data(), EDGERT_F32, 10, idx.data(), EDGERT_U32, 4, got.data(),
                                      EDGERT_F32),
              EDGERT_OK);
    for (size_t i = 0; i < idx.size(); ++i) EXPECT_EQ(got[i], a[idx[i]]);
  }
  EXPECT_EQ(b[3], 0.25f);  // 3 * 0.75, minus 1 twice
  EXPECT_EQ(b[9], 22.75f);  // 9 * 0.75, plus 8 twice
  EXPECT_EQ(b[1], 0.75f);
}

TEST(CApiSparseOn, RejectionsLeaveWeightsAlone) {
  std::vector<float> w(8, 1.0f);
  const std::vector<uint32_t> unsorted = {3, 1};
  const std::vector<float> values = {5.0f, 5.0f};
  EXPECT_EQ(edgert_sparse_patch_on(EDGERT_BACKEND_AUTO, nullptr, w.data(), EDGERT_F32, 8, unsorted.data(), EDGERT_U32,
                                   values.data(), EDGERT_F32, 2, EDGERT_PATCH_SET),
            EDGERT_ERR_INDEX_UNSORTED);
  EXPECT_EQ(edgert_sparse_patch_on(kBadBackend, nullptr, w.data(), EDGERT_F32, 8, unsorted.data(), EDGERT_U32,
                                   values.data(), EDGERT_F32, 1, EDGERT_PATCH_SET),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert_sparse_patch_on(EDGERT_BACKEND_CPU, nullptr, w.data(), EDGERT_C64, 8, unsorted.data(), EDGERT_U32,
                                   values.data(), EDGERT_F32, 1, EDGERT_PATCH_SET),
            EDGERT_ERR_DTYPE);
  if (!cuda_usable()) {
    EXPECT_EQ(edgert_sparse_patch_on(EDGERT_BACKEND_CUDA, nullptr, w.data(), EDGERT_F32, 8, unsorted.data(),
                                     EDGERT_U32, values.data(), EDGERT_F32, 1, EDGERT_PATCH_SET),
              EDGERT_ERR_BACKEND_UNAVAILABLE);
    std::vector<float> out(1, kSentinel);
    EXPECT_EQ(edgert_sparse_gather_on(EDGERT_BACKEND_CUDA, nullptr, w.data(), EDGERT_F32, 8, unsorted.data(),
                                      EDGERT_U32, 1, out.data(), EDGERT_F32),
              EDGERT_ERR_BACKEND_UNAVAILABLE);
    EXPECT_EQ(out[0], kSentinel);
  }
  EXPECT_TRUE(all_equal(w, 1.0f));
}
