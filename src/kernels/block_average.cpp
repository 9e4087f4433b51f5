#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"

namespace edgert::cpu {

using detail::fail;

namespace {

// acc[w] += |row[w]|; independent lanes, so the compiler vectorises it as is
// (with an AVX2 clone picked at load time on x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
void add_abs_row(float* __restrict acc, const float* __restrict row, int64_t width) {
  for (int64_t w = 0; w < width; ++w) acc[w] += std::fabs(row[w]);
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
      std::fill(colsum.begin(), colsum.end(), 0.0f);
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* plane = grad + (img * c + ch) * height * width;
        for (int64_t h = h0; h < h1; ++h) add_abs_row(acc, plane + h * width, width);
      }
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
