#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"

// Multiversioned hot loop: AVX2+FMA where the CPU has it, baseline otherwise
// (ifunc dispatch at load time, GCC on x86-64 Linux only).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define EDGERT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
// flatten: inline every helper (templates included) so that it is compiled for the clone's target.
#define EDGERT_CLONES_FLAT __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define EDGERT_CLONES
#define EDGERT_CLONES_FLAT
#endif

namespace edgert::cpu {

using detail::fail;

namespace {

// One patch: tile is the zero-ringed (P+2) x (P+2) x Cin neighbourhood, wt the
// kernel transposed to [Cin*9][F] so that the F outputs of a pixel are one
// contiguous, vectorisable accumulation.
inline void patch_generic(const float* tile, const float* wt, const float* bias, int64_t c_in, int64_t tile_w,
                                 int64_t ph, int64_t pw, int64_t f_out, int32_t activation, float* out_tile) {
  for (int64_t y = 0; y < ph; ++y) {
    for (int64_t x = 0; x < pw; ++x) {
      float* acc = out_tile + (y * pw + x) * f_out;
      for (int64_t f = 0; f < f_out; ++f) acc[f] = bias[f];
      const float* w = wt;
      for (int64_t c = 0; c < c_in; ++c) {
        const float* base = tile + (c * tile_w + y) * tile_w + x;
        for (int ky = 0; ky < 3; ++ky) {
          for (int kx = 0; kx < 3; ++kx, w += f_out) {
            const float v = base[ky * tile_w + kx];
            for (int64_t f = 0; f < f_out; ++f) acc[f] += v * w[f];
          }
        }
      }
      if (activation == kActRelu) {
        for (int64_t f = 0; f < f_out; ++f) acc[f] = acc[f] > 0.0f ? acc[f] : 0.0f;
      }
    }
  }
}

#if defined(__GNUC__)
typedef float v8f __attribute__((vector_size(32), aligned(4)));  // unaligned loads/stores are fine
#pragma GCC diagnostic ignored "-Wpsabi"  // internal, always-inlined helpers: no ABI crosses a call

// Two horizontally adjacent pixels per step share every weight load; the F
// accumulators of both pixels live in kF/4 vector registers.
template <int kF>
inline void patch_fixed(const float* tile, const float* wt, const float* bias, const int32_t* tap_offset,
                        int64_t taps, int64_t tile_w, int64_t ph, int64_t pw, int32_t activation, float* out_tile) {
  static_assert(kF % 8 == 0, "vector path needs F divisible by 8");
  constexpr int kV = kF / 8;
  const v8f zero = {};
  for (int64_t y = 0; y < ph; ++y) {
    for (int64_t x = 0; x < pw; x += 2) {
      const bool pair = x + 1 < pw;
      v8f acc0[kV], acc1[kV];
      for (int v = 0; v < kV; ++v) acc0[v] = acc1[v] = *reinterpret_cast<const v8f*>(bias + 8 * v);
      // One flat loop over the Cin*9 taps (offsets precomputed): the fully unrolled
      // c/ky/kx nest spilled the accumulators of F = 32 to the stack.
      const float* base = tile + y * tile_w + x;
      const float* w = wt;
#pragma GCC unroll 3
      for (int64_t t = 0; t < taps; ++t, w += kF) {
        // base[.. + 1] stays inside the zero-ringed tile even for the last, unpaired pixel
        const float v0 = base[tap_offset[t]], v1 = base[tap_offset[t] + 1];
        for (int v = 0; v < kV; ++v) {
          const v8f wv = *reinterpret_cast<const v8f*>(w + 8 * v);
          acc0[v] += v0 * wv;
          acc1[v] += v1 * wv;
        }
      }
      float* d0 = out_tile + (y * pw + x) * kF;
      for (int v = 0; v < kV; ++v) {
        const v8f r0 = activation == kActRelu ? (acc0[v] > zero ? acc0[v] : zero) : acc0[v];
        *reinterpret_cast<v8f*>(d0 + 8 * v) = r0;
      }
      if (pair) {
        for (int v = 0; v < kV; ++v) {
          const v8f r1 = activation == kActRelu ? (acc1[v] > zero ? acc1[v] : zero) : acc1[v];
          *reinterpret_cast<v8f*>(d0 + kF + 8 * v) = r1;
        }
      }
    }
  }
}
#else
template <int kF>
inline void patch_fixed(const float* tile, const float* wt, const float* bias, const int32_t* tap_offset,
                        int64_t taps, int64_t tile_w, int64_t ph, int64_t pw, int32_t activation, float* out_tile) {
  patch_generic(tile, wt, bias, taps / 9, tile_w, ph, pw, kF, activation, out_tile);
}
#endif


// One row of patches of one image (output rows of different items are disjoint).
EDGERT_CLONES_FLAT void patch_row(const float* x, const float* kernels, const float* bias, int64_t c_in, int64_t height,
                                  int64_t width, int64_t f_out, int64_t patch, int32_t activation, int64_t item,
                                  const int32_t* tap_offset, float* tile_buf, float* wt_buf, float* out_buf,
                                  float* out) {
  const int64_t grid_h = (height + patch - 1) / patch, grid_w = (width + patch - 1) / patch;
  const int64_t tile_w = patch + 2, taps = c_in * 9;
  const int64_t plane = height * width;
  const int64_t img = item / grid_h, gy = item % grid_h;
  const int64_t y0 = gy * patch, ph = std::min(patch, height - y0);
  for (int64_t gx = 0; gx < grid_w; ++gx) {
    const int64_t x0 = gx * patch, pw = std::min(patch, width - x0);
    // Zero ring and out-of-frame pixels: the convolution sees only its own patch.
    std::fill(tile_buf, tile_buf + c_in * tile_w * tile_w, 0.0f);
    for (int64_t c = 0; c < c_in; ++c) {
      for (int64_t y = 0; y < ph; ++y) {
        const float* src = x + ((img * c_in + c) * height + y0 + y) * width + x0;
        std::memcpy(tile_buf + (c * tile_w + y + 1) * tile_w + 1, src,
                    static_cast<size_t>(pw) * sizeof(float));
      }
    }
    const int64_t p_index = (img * grid_h + gy) * grid_w + gx;
    const float* k = kernels + p_index * f_out * taps;  // [F][Cin*9]
    for (int64_t f = 0; f < f_out; ++f) {
      for (int64_t t = 0; t < taps; ++t) wt_buf[t * f_out + f] = k[f * taps + t];
    }
    const float* b = bias + p_index * f_out;
    switch (f_out) {
      case 8: patch_fixed<8>(tile_buf, wt_buf, b, tap_offset, taps, tile_w, ph, pw, activation, out_buf); break;
      case 16: patch_fixed<16>(tile_buf, wt_buf, b, tap_offset, taps, tile_w, ph, pw, activation, out_buf); break;
      case 32: patch_fixed<32>(tile_buf, wt_buf, b, tap_offset, taps, tile_w, ph, pw, activation, out_buf); break;
      case 64: patch_fixed<64>(tile_buf, wt_buf, b, tap_offset, taps, tile_w, ph, pw, activation, out_buf); break;
      default:
        patch_generic(tile_buf, wt_buf, b, c_in, tile_w, ph, pw, f_out, activation, out_buf);
    }
    // [pixel][F] -> out[img][F][H][W]
    for (int64_t f = 0; f < f_out; ++f) {
      float* plane_out = out + (img * f_out + f) * plane;
      for (int64_t y = 0; y < ph; ++y) {
        float* row = plane_out + (y0 + y) * width + x0;
        const float* src = out_buf + (y * pw) * f_out + f;
        for (int64_t xx = 0; xx < pw; ++xx) row[xx] = src[xx * f_out];
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
    // +1: the paired-pixel loop reads one element past a row for an unpaired last pixel (value unused)
    std::vector<float> tile(static_cast<size_t>(c_in * tile_w * tile_w + 1), 0.0f);
    std::vector<float> wt(static_cast<size_t>(taps * f_out));
    std::vector<float> out_tile(static_cast<size_t>(patch * patch * f_out));
    for (int64_t item = begin; item < end; ++item) {
      patch_row(x, kernels, bias, c_in, height, width, f_out, patch, activation, item, tap_offset.data(), tile.data(),
                wt.data(), out_tile.data(), out);
    }
  });
  return EDGERT_OK;
}

}  // namespace edgert::cpu
