#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"
#include "simd.hpp"

namespace edgert::cpu {

using detail::fail;

namespace {

// acc[w] = sum over the c planes of image and their rows [h0, h1) of |plane[h][w]|: the column sums of
// one row of blocks. Four image rows per pass over acc, so acc is loaded and stored once per four rows
// while the rows stream in order; the whole item runs inside one clone (no call per row).
EDGERT_KERNEL_CLONES void column_abs_sums(const float* image, int64_t c, int64_t height, int64_t width, int64_t h0,
                                          int64_t h1, float* acc) {
  std::fill(acc, acc + width, 0.0f);
  const int64_t band = h1 - h0, n_rows = c * band;
  // rows of different channels share a pass: the sum runs over both
  auto row = [&](int64_t r) { return image + ((r / band) * height + h0 + r % band) * width; };
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) {
    const float *r0 = row(r), *r1 = row(r + 1), *r2 = row(r + 2), *r3 = row(r + 3);
    int64_t w = 0;
    for (; w + kLanes <= width; w += kLanes) {
      const v8f pair01 = abs8(load8(r0 + w)) + abs8(load8(r1 + w));
      const v8f pair23 = abs8(load8(r2 + w)) + abs8(load8(r3 + w));
      store8(acc + w, load8(acc + w) + (pair01 + pair23));
    }
    for (; w < width; ++w) acc[w] += (std::fabs(r0[w]) + std::fabs(r1[w])) + (std::fabs(r2[w]) + std::fabs(r3[w]));
  }
  for (; r < n_rows; ++r) {
    const float* r0 = row(r);
    int64_t w = 0;
    for (; w + kLanes <= width; w += kLanes) store8(acc + w, load8(acc + w) + abs8(load8(r0 + w)));
    for (; w < width; ++w) acc[w] += std::fabs(r0[w]);
  }
}

}  // namespace

edgert_status block_average(const float* grad, int64_t n, int64_t c, int64_t height, int64_t width,
                            int64_t block, float* out) {
  if (n < 0 || c < 0 || height < 0 || width < 0) {
    return fail(EDGERT_ERR_SHAPE, "block_average: negative shape [%lld, %lld, %lld, %lld]", (long long)n,
                (long long)c, (long long)height, (long long)width);
  }
  if (block <= 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "block_average: block must be positive, got %lld", (long long)block);
  if (n == 0 || height == 0 || width == 0) return EDGERT_OK;
  if ((grad == nullptr && c > 0) || out == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "block_average: null buffer");
  const int64_t rows = (height + block - 1) / block;
  const int64_t cols = (width + block - 1) / block;
  if (c == 0) {  // mean over an empty set of channels: define it as 0
    for (int64_t i = 0; i < n * rows * cols; ++i) out[i] = 0.0f;
    return EDGERT_OK;
  }
  // One work item = one row of blocks of one image. It streams the C * block
  // image rows once, adding |x| into a per-column accumulator: a vertical,
  // element-wise sum that vectorises (a horizontal per-block float reduction
  // would not, since it fixes the summation order). The block sums across the
  // columns are then taken once per item, costing 1 / (C * block) of the pass.
  detail::parallel_for(n * rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> colsum(static_cast<size_t>(width));
    float* acc = colsum.data();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t img = item / rows, br = item % rows;
      const int64_t h0 = br * block, h1 = std::min(height, h0 + block);
      column_abs_sums(grad + img * c * height * width, c, height, width, h0, h1, acc);
      float* dst = out + (img * rows + br) * cols;
      const float valid_rows = static_cast<float>(h1 - h0);
      for (int64_t bc = 0; bc < cols; ++bc) {
        const int64_t w0 = bc * block, w1 = std::min(width, w0 + block);
        float s = 0.0f;
        for (int64_t w = w0; w < w1; ++w) s += acc[w];
        dst[bc] = s / (static_cast<float>(c) * valid_rows * static_cast<float>(w1 - w0));
      }
    }
  });
  return EDGERT_OK;
}

}  // namespace edgert::cpu
