#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <algorithm>
#include <vector>

#include "core/half.hpp"
#include "edgert/edgert.h"
#include "edgert/edgert.hpp"
#include "edgert/kernels.hpp"

TEST(Core, VersionAndStatusNames) {
  int major = -1, minor = -1, patch = -1;
  edgert_version(&major, &minor, &patch);
  EXPECT_EQ(std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch),
            std::string(edgert_version_string()));
  EXPECT_STREQ(edgert_status_name(EDGERT_ERR_SHAPE), "EDGERT_ERR_SHAPE");
  EXPECT_STREQ(edgert_status_name(static_cast<edgert_status>(12345)), "EDGERT_ERR_UNKNOWN");
}

TEST(Core, BackendQuery) {
  edgert_backend_info info{};
  ASSERT_EQ(edgert_backend_query(EDGERT_BACKEND_CPU, &info), EDGERT_OK);
  EXPECT_EQ(info.compiled, 1);
  EXPECT_EQ(info.usable, 1);
  EXPECT_GE(info.num_threads, 1);
  ASSERT_EQ(edgert_backend_query(EDGERT_BACKEND_CUDA, &info), EDGERT_OK);
  if (!info.compiled) EXPECT_EQ(info.usable, 0);
  EXPECT_EQ(edgert_backend_query(static_cast<edgert_backend>(7), &info), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(edgert_last_error()).find("unknown backend"), std::string::npos);
  EXPECT_EQ(edgert_backend_query(EDGERT_BACKEND_CPU, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
}

TEST(Core, LastErrorIsThreadLocal) {
  edgert_backend_info info{};
  ASSERT_EQ(edgert_backend_query(EDGERT_BACKEND_CPU, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
  std::string other;
  std::thread([&] { other = edgert_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_NE(std::string(edgert_last_error()), "");
  (void)info;
}

TEST(Half, RoundTripsEveryHalfValue) {
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    const float f = edgert::detail::half_to_float(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(edgert::detail::half_to_float(edgert::detail::float_to_half(f))));
      continue;
    }
    ASSERT_EQ(edgert::detail::float_to_half(f), h) << "bits " << bits;
  }
}

TEST(Half, RoundsToNearestEven) {
  // 1 + 2^-11 lies exactly between 1 and the next half (1 + 2^-10): ties to even (1).
  EXPECT_EQ(edgert::detail::float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3 * 2^-11 lies between 1 + 2^-10 (odd) and 1 + 2^-9 (even): rounds up.
  EXPECT_EQ(edgert::detail::float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(edgert::detail::float_to_half(65520.0f), 0x7c00);  // overflows to inf
  EXPECT_EQ(edgert::detail::float_to_half(65519.0f), 0x7bff);
  EXPECT_EQ(edgert::detail::float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie to even zero
  EXPECT_EQ(edgert::detail::float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(edgert::detail::float_to_half(-0.0f), 0x8000);
}

namespace {
std::vector<float> reference_block_average(const std::vector<float>& g, int64_t n, int64_t c, int64_t h, int64_t w,
                                           int64_t b) {
  const int64_t rows = (h + b - 1) / b, cols = (w + b - 1) / b;
  std::vector<float> out(static_cast<size_t>(n * rows * cols));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t q = 0; q < cols; ++q) {
        double s = 0;
        int64_t cnt = 0;
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t y = r * b; y < std::min(h, r * b + b); ++y)
            for (int64_t x = q * b; x < std::min(w, q * b + b); ++x, ++cnt)
              s += std::fabs(g[static_cast<size_t>(((i * c + ch) * h + y) * w + x)]);
        out[static_cast<size_t>((i * rows + r) * cols + q)] = cnt ? static_cast<float>(s / cnt) : 0.0f;
      }
  return out;
}
}  // namespace

TEST(BlockAverage, MatchesDoubleReferenceOnOddShapes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  const int64_t shapes[][5] = {{1, 1, 1, 1, 16}, {2, 3, 17, 33, 16}, {1, 5, 40, 9, 4}, {3, 2, 31, 31, 7}};
  for (const auto& s : shapes) {
    std::vector<float> g(static_cast<size_t>(s[0] * s[1] * s[2] * s[3]));
    for (float& v : g) v = normal(rng);
    const int64_t rows = (s[2] + s[4] - 1) / s[4], cols = (s[3] + s[4] - 1) / s[4];
    std::vector<float> out(static_cast<size_t>(s[0] * rows * cols), -1.0f);
    ASSERT_EQ(edgert::cpu::block_average(g.data(), s[0], s[1], s[2], s[3], s[4], out.data()), EDGERT_OK);
    const auto ref = reference_block_average(g, s[0], s[1], s[2], s[3], s[4]);
    for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-5f * (1.0f + std::fabs(ref[i])));
  }
}

TEST(BlockAverage, RejectsBadArguments) {
  float g[4] = {1, 2, 3, 4}, out[4];
  EXPECT_EQ(edgert::cpu::block_average(g, 1, 1, 2, 2, 0, out), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert::cpu::block_average(g, 1, 1, -2, 2, 2, out), EDGERT_ERR_SHAPE);
  EXPECT_EQ(edgert::cpu::block_average(g, 0, 1, 2, 2, 2, out), EDGERT_OK);  // empty batch
}
