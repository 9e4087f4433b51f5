#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"
#include "simd.hpp"


namespace edgert::cpu {

using detail::fail;

namespace {

constexpr int kMaxVecs = 4;                               // a block is at most 32 pixels of one patch
constexpr int64_t kBlockPixels = kLanes * kMaxVecs;
constexpr int64_t kPrefetchPatches = 4;                   // output prefetch distance (measured: 12 % faster)
constexpr int64_t kColStride = kBlockPixels + kLanes;     // slack for copy_run's 8-wide stores

// dst[0, n) = src[0, n); reads and writes up to 7 floats past n (buffers carry slack; the extra
// lanes are overwritten by the next run or never used).
EDGERT_VINLINE void copy_run(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) store8(dst + i, load8(src + i));
}

// dst[0, n) = src[0, n) exactly (user memory on either side): 8- or 4-wide copies, the last one
// overlapping the previous so that no element outside [0, n) is touched.
EDGERT_VINLINE void copy_exact(float* dst, const float* src, int64_t n) {
  if (n >= kLanes) {
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) std::memcpy(dst + i, src + i, kLanes * sizeof(float));
    if (i < n) std::memcpy(dst + n - kLanes, src + n - kLanes, kLanes * sizeof(float));
  } else if (n >= 4) {
    std::memcpy(dst, src, 4 * sizeof(float));
    std::memcpy(dst + n - 4, src + n - 4, 4 * sizeof(float));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

// A block's pixels [q0, q0 + n) of a patch (row-major, pw per row) cut into runs within one patch row:
// lane of the first pixel, its row y and column x, and the run's length.
struct Run {
  int64_t lane, y, x, len;
};

inline int64_t block_runs(int64_t q0, int64_t n, int64_t pw, Run* runs) {
  int64_t count = 0;
  for (int64_t lane = 0, y = q0 / pw, x = q0 % pw; lane < n; ++y, x = 0) {
    const int64_t len = std::min(pw - x, n - lane);
    runs[count++] = Run{lane, y, x, len};
    lane += len;
  }
  return count;
}

// kF features of one block of up to 32 pixels: out[f][pixel] = bias[f] + sum_t k[f][t] col[t][pixel].
// Pixels run along the vector lanes, so the kernel is used as stored ([F][Cin*9], one broadcast per
// feature and tap) and the result comes out in the output's [F][pixel] order; the kF features share
// each column load, and kF * kV accumulators stay in registers over all taps.
template <int kF, int kV>
EDGERT_VINLINE void features_gemm(const float* col, const float* k, const float* bias, int64_t taps,
                                  int32_t activation, float* ob) {
  const v8f ones = splat(1.0f);
  v8f acc[kF][kV];
  for (int i = 0; i < kF; ++i) {
    for (int v = 0; v < kV; ++v) acc[i][v] = fmadd(v8f{}, bias[i], ones);  // (a plain splat compiled to 8 inserts)
  }
  for (int64_t t = 0; t < taps; ++t) {
    for (int v = 0; v < kV; ++v) {
      const v8f c = load8(col + t * kColStride + kLanes * v);
      for (int i = 0; i < kF; ++i) acc[i][v] = fmadd(acc[i][v], k[i * taps + t], c);
    }
  }
  for (int i = 0; i < kF; ++i) {
    for (int v = 0; v < kV; ++v) {
      store8(ob + i * kBlockPixels + kLanes * v, activation == kActRelu ? relu(acc[i][v]) : acc[i][v]);
    }
  }
}

// All F features of a block, three at a time (12 accumulators + 3 broadcasts: 15 of the 16 AVX registers).
template <int kV>
EDGERT_VINLINE void block_gemm(const float* col, const float* k, const float* bias, int64_t taps, int64_t f_out,
                               int32_t activation, float* ob) {
  int64_t f = 0;
  for (; f + 3 <= f_out; f += 3) {
    features_gemm<3, kV>(col, k + f * taps, bias + f, taps, activation, ob + f * kBlockPixels);
  }
  if (f_out - f == 2) features_gemm<2, kV>(col, k + f * taps, bias + f, taps, activation, ob + f * kBlockPixels);
  if (f_out - f == 1) features_gemm<1, kV>(col, k + f * taps, bias + f, taps, activation, ob + f * kBlockPixels);
}

// One row of patches of one image (output rows of different items are disjoint). Per patch: gather the
// zero-ringed (P+2) x (P+2) x Cin tile, then per block of <= 32 pixels build the [Cin*9][pixels] columns
// from it (one contiguous copy per tap and patch row), multiply, and write the rows of each feature plane.
EDGERT_KERNEL_CLONES void patch_row(const float* x, const float* kernels, const float* bias, int64_t c_in,
                                  int64_t height, int64_t width, int64_t f_out, int64_t patch, int32_t activation,
                                  int64_t item, const int32_t* tap_offset, float* tile, float* col, float* ob, Run* runs,
                                  float* out) {
  const int64_t grid_h = (height + patch - 1) / patch, grid_w = (width + patch - 1) / patch;
  const int64_t tile_w = patch + 2, taps = c_in * 9;
  const int64_t plane = height * width;
  const int64_t img = item / grid_h, gy = item % grid_h;
  const int64_t y0 = gy * patch, ph = std::min(patch, height - y0);
  for (int64_t gx = 0; gx < grid_w; ++gx) {
    const int64_t x0 = gx * patch, pw = std::min(patch, width - x0);
    // Zero ring and out-of-frame pixels: the convolution sees only its own patch.
    std::fill(tile, tile + c_in * tile_w * tile_w, 0.0f);
    for (int64_t c = 0; c < c_in; ++c) {
      for (int64_t y = 0; y < ph; ++y) {
        copy_exact(tile + (c * tile_w + y + 1) * tile_w + 1, x + ((img * c_in + c) * height + y0 + y) * width + x0,
                   pw);
      }
    }
    const int64_t p_index = (img * grid_h + gy) * grid_w + gx;
    const float* k = kernels + p_index * f_out * taps;  // [F][Cin*9], used as stored
    const float* b = bias + p_index * f_out;
    for (int64_t q0 = 0; q0 < ph * pw; q0 += kBlockPixels) {
      const int64_t n = std::min(kBlockPixels, ph * pw - q0);
      const int64_t n_runs = block_runs(q0, n, pw, runs);
      // Tap t = (c, ky, kx) of pixel (y, x) reads tile[c][y + ky][x + kx].
      for (int64_t r = 0; r < n_runs; ++r) {
        const float* src = tile + runs[r].y * tile_w + runs[r].x;
        float* dst = col + runs[r].lane;
        if (runs[r].len <= kLanes) {  // P <= 8: one vector per tap
          for (int64_t t = 0; t < taps; ++t) store8(dst + t * kColStride, load8(src + tap_offset[t]));
        } else {
          for (int64_t t = 0; t < taps; ++t) copy_run(dst + t * kColStride, src + tap_offset[t], runs[r].len);
        }
      }
      switch ((n + kLanes - 1) / kLanes) {
        case 1: block_gemm<1>(col, k, b, taps, f_out, activation, ob); break;
        case 2: block_gemm<2>(col, k, b, taps, f_out, activation, ob); break;
        case 3: block_gemm<3>(col, k, b, taps, f_out, activation, ob); break;
        default: block_gemm<4>(col, k, b, taps, f_out, activation, ob); break;
      }
      float* dst = out + img * f_out * plane + y0 * width + x0;
      const int64_t ahead = x0 + (kPrefetchPatches + 1) * patch <= width ? kPrefetchPatches * patch : 0;
      for (int64_t r = 0; r < n_runs; ++r) {
        const int64_t at = runs[r].y * width + runs[r].x, lane = runs[r].lane, len = runs[r].len;
        // Runs of <= 8 pixels with 8 columns of this item's own output row left: one 8-wide store, whose
        // extra lanes land on the next patch's pixels (written later by this same item).
        const bool wide = len <= kLanes && x0 + runs[r].x + kLanes <= width;
        for (int64_t f = 0; f < f_out; ++f) {
          if (wide) {
            store8(dst + f * plane + at, load8(ob + f * kBlockPixels + lane));
          } else {
            copy_exact(dst + f * plane + at, ob + f * kBlockPixels + lane, len);
          }
          // One patch row writes F * P rows at once, more streams than the hardware prefetcher follows:
          // fetch the lines of the patch kPrefetchPatches to the right now.
          if (ahead) prefetch_for_write(dst + f * plane + at + ahead);
        }
      }
    }
  }
}

}  // namespace

edgert_status adaptive_conv(const float* x, const float* kernels, const float* bias, int64_t n, int64_t c_in,
                            int64_t height, int64_t width, int64_t f_out, int64_t patch, int32_t activation,
                            float* out) {
  if (n < 0 || c_in < 0 || height < 0 || width < 0 || f_out < 0) {
    return fail(EDGERT_ERR_SHAPE, "adaptive_conv: negative shape (N=%lld, Cin=%lld, H=%lld, W=%lld, F=%lld)",
                (long long)n, (long long)c_in, (long long)height, (long long)width, (long long)f_out);
  }
  if (patch <= 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: patch must be positive, got %lld", (long long)patch);
  if (patch > 256) return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: patch %lld is larger than 256", (long long)patch);
  if (activation != kActNone && activation != kActRelu) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: activation must be 0 (none) or 1 (relu), got %d", activation);
  }
  if (n == 0 || height == 0 || width == 0 || f_out == 0) return EDGERT_OK;
  if (x == nullptr || kernels == nullptr || bias == nullptr || out == nullptr) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: null buffer");
  }
  const int64_t grid_h = (height + patch - 1) / patch;
  const int64_t tile_w = patch + 2, taps = c_in * 9;

  // Tap t = (c, ky, kx) of the [F][Cin][3][3] kernels reads tile[c][y + ky][x + kx].
  std::vector<int32_t> tap_offset(static_cast<size_t>(taps));
  for (int64_t t = 0; t < taps; ++t) {
    tap_offset[static_cast<size_t>(t)] = static_cast<int32_t>((t / 9) * tile_w * tile_w + (t % 9 / 3) * tile_w + t % 3);
  }
  // Work item: one row of patches of one image.
  detail::parallel_for(n * grid_h, 1, [&](int64_t begin, int64_t end) {
    // + kLanes: copy_run reads up to 7 floats past the last tile row
    std::vector<float> tile(static_cast<size_t>(c_in * tile_w * tile_w + kLanes), 0.0f);
    std::vector<float> col(static_cast<size_t>(taps * kColStride + kLanes));
    std::vector<float> ob(static_cast<size_t>(f_out * kBlockPixels + kLanes));  // + kLanes: 8-wide reads
    std::vector<Run> runs(static_cast<size_t>(kBlockPixels));  // a block spans at most 32 patch rows
    for (int64_t item = begin; item < end; ++item) {
      patch_row(x, kernels, bias, c_in, height, width, f_out, patch, activation, item, tap_offset.data(),
                tile.data(), col.data(), ob.data(), runs.data(), out);
    }
  });
  return EDGERT_OK;
}

}  // namespace edgert::cpu
