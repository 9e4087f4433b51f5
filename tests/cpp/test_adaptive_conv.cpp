#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "edgert/kernels.hpp"

namespace {

// Naive definition: each output pixel sums the 3x3 window of its own patch only.
std::vector<float> naive(const std::vector<float>& x, const std::vector<float>& k, const std::vector<float>& b,
                         int64_t n, int64_t c_in, int64_t h, int64_t w, int64_t f_out, int64_t p, int act) {
  const int64_t gh = (h + p - 1) / p, gw = (w + p - 1) / p;
  std::vector<float> out(static_cast<size_t>(n * f_out * h * w));
  for (int64_t img = 0; img < n; ++img)
    for (int64_t f = 0; f < f_out; ++f)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < w; ++xx) {
          const int64_t pi = y / p, pj = xx / p, pid = (img * gh + pi) * gw + pj;
          double acc = b[static_cast<size_t>(pid * f_out + f)];
          for (int64_t c = 0; c < c_in; ++c)
            for (int ky = -1; ky <= 1; ++ky)
              for (int kx = -1; kx <= 1; ++kx) {
                const int64_t yy = y + ky, xw = xx + kx;
                if (yy < 0 || xw < 0 || yy >= h || xw >= w || yy / p != pi || xw / p != pj) continue;
                acc += static_cast<double>(x[static_cast<size_t>(((img * c_in + c) * h + yy) * w + xw)]) *
                       k[static_cast<size_t>(((pid * f_out + f) * c_in + c) * 9 + (ky + 1) * 3 + (kx + 1))];
              }
          out[static_cast<size_t>(((img * f_out + f) * h + y) * w + xx)] =
              static_cast<float>(act == 1 ? std::max(acc, 0.0) : acc);
        }
  return out;
}

}  // namespace

TEST(AdaptiveConv, MatchesNaiveOnOddShapes) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  // n, c_in, h, w, f, p, act
  const int64_t cases[][7] = {{1, 3, 1, 1, 32, 5, 1}, {2, 3, 7, 11, 8, 5, 1}, {1, 1, 9, 4, 16, 3, 0},
                              {1, 3, 13, 17, 64, 5, 1}, {1, 2, 6, 6, 5, 1, 0}, {1, 3, 10, 10, 7, 4, 1}};
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
    const auto want = naive(x, k, b, n, ci, h, w, f, p, static_cast<int>(c[6]));
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
