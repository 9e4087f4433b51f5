// The adaptive convolution by its definition, for the C++ tests: each output pixel sums the 3x3 window of
// its own patch only (zeros outside the patch and the frame), accumulated in double. Layouts as
// edgert::cpu::adaptive_conv (kernels.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

inline std::vector<float> adaptive_conv_naive(const std::vector<float>& x, const std::vector<float>& k,
                                              const std::vector<float>& b, int64_t n, int64_t c_in, int64_t h,
                                              int64_t w, int64_t f_out, int64_t p, bool relu) {
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
              static_cast<float>(relu ? std::max(acc, 0.0) : acc);
        }
  return out;
}
