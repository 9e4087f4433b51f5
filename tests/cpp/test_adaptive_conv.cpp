#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "adaptive_conv_naive.hpp"
#include "edgert/kernels.hpp"

TEST(AdaptiveConv, MatchesNaiveOnOddShapes) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  // n, c_in, h, w, f, p, act
  const int64_t cases[][7] = {{1, 3, 1, 1, 32, 5, 1}, {2, 3, 7, 11, 8, 5, 1}, {1, 1, 9, 4, 16, 3, 0},
                              {1, 3, 13, 17, 64, 5, 1}, {1, 2, 6, 6, 5, 1, 0}, {1, 3, 10, 10, 7, 4, 1},
                              // patches of more than 32 pixels (several blocks, runs longer than a vector),
                              // frames narrower than a patch
                              {2, 3, 11, 6, 2, 6, 1}, {1, 3, 23, 37, 7, 9, 1}, {1, 2, 20, 33, 3, 16, 0},
                              {1, 3, 4, 3, 31, 5, 0}};
  for (const auto& c : cases) {
    const int64_t n = c[0], ci = c[1], h = c[2], w = c[3], f = c[4], p = c[5];
    const int64_t gh = (h + p - 1) / p, gw = (w + p - 1) / p;
    std::vector<float> x(static_cast<size_t>(n * ci * h * w)), k(static_cast<size_t>(n * gh * gw * f * ci * 9)),
        b(static_cast<size_t>(n * gh * gw * f));
    for (auto* v : {&x, &k, &b})
      for (float& e : *v) e = normal(rng);
    std::vector<float> out(static_cast<size_t>(n * f * h * w), NAN);
    ASSERT_EQ(edgert::cpu::adaptive_conv(x.data(), k.data(), b.data(), n, ci, h, w, f, p, static_cast<int32_t>(c[6]),
                                         out.data()),
              EDGERT_OK);
    const auto want = adaptive_conv_naive(x, k, b, n, ci, h, w, f, p, c[6] != 0);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-4f * (1 + std::fabs(want[i]))) << i;
  }
}

TEST(AdaptiveConv, RejectsBadArgumentsWithoutWriting) {
  std::vector<float> x(25, 1.0f), k(32 * 27, 0.5f), b(32, 0.0f), out(32 * 25, -7.0f);
  EXPECT_EQ(edgert::cpu::adaptive_conv(x.data(), k.data(), b.data(), 1, 3, 5, 5, 32, 0, 1, out.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert::cpu::adaptive_conv(x.data(), k.data(), b.data(), 1, 3, -5, 5, 32, 5, 1, out.data()),
            EDGERT_ERR_SHAPE);
  EXPECT_EQ(edgert::cpu::adaptive_conv(x.data(), k.data(), b.data(), 1, 3, 5, 5, 32, 5, 9, out.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert::cpu::adaptive_conv(nullptr, k.data(), b.data(), 1, 3, 5, 5, 32, 5, 1, out.data()),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == -7.0f; }));
  EXPECT_EQ(edgert::cpu::adaptive_conv(nullptr, nullptr, nullptr, 0, 3, 5, 5, 32, 5, 1, nullptr), EDGERT_OK);
}
