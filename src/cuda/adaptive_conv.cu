#include "cuda/common.cuh"
#include "edgert/kernels.hpp"

namespace edgert::cuda {
namespace {

constexpr int kMaxTile = 18 * 18 * 4;  // (P+2)^2 * Cin floats for P <= 16, Cin <= 4 in shared memory

// One thread block per patch. The zero-ringed input tile and the patch's kernel
// are staged in shared memory; threads stride over (feature, pixel) pairs so
// that consecutive threads write consecutive pixels of one output plane.
__global__ void adaptive_conv_kernel(const float* __restrict__ x, const float* __restrict__ kernels,
                                     const float* __restrict__ bias, long long c_in, long long height,
                                     long long width, long long f_out, long long patch, long long grid_h,
                                     long long grid_w, int activation, float* __restrict__ out) {
  extern __shared__ float shared[];
  const long long pid = blockIdx.x;
  const long long img = pid / (grid_h * grid_w);
  const long long gy = (pid / grid_w) % grid_h, gx = pid % grid_w;
  const long long y0 = gy * patch, x0 = gx * patch;
  const long long ph = min(patch, height - y0), pw = min(patch, width - x0);
  const long long tile_w = patch + 2;
  const long long tile_size = c_in * tile_w * tile_w;
  const long long taps = c_in * 9;
  float* tile = shared;
  float* weights = shared + tile_size;
  for (long long i = threadIdx.x; i < tile_size; i += blockDim.x) {
    const long long c = i / (tile_w * tile_w), r = (i / tile_w) % tile_w - 1, q = i % tile_w - 1;
    tile[i] = (r >= 0 && q >= 0 && r < ph && q < pw) ? x[((img * c_in + c) * height + y0 + r) * width + x0 + q] : 0.0f;
  }
  const float* k = kernels + pid * f_out * taps;
  for (long long i = threadIdx.x; i < f_out * taps; i += blockDim.x) weights[i] = k[i];
  __syncthreads();
  const long long pixels = ph * pw;
  for (long long i = threadIdx.x; i < f_out * pixels; i += blockDim.x) {
    const long long f = i / pixels, p = i % pixels;
    const long long y = p / pw, xx = p % pw;
    float acc = bias[pid * f_out + f];
    const float* w = weights + f * taps;
    for (long long c = 0; c < c_in; ++c) {
      const float* t = tile + (c * tile_w + y) * tile_w + xx;
#pragma unroll
      for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
        for (int kx = 0; kx < 3; ++kx) acc += t[ky * tile_w + kx] * w[c * 9 + ky * 3 + kx];
      }
    }
    if (activation == 1) acc = fmaxf(acc, 0.0f);
    out[((img * f_out + f) * height + y0 + y) * width + x0 + xx] = acc;
  }
}

}  // namespace

edgert_status adaptive_conv(const float* x, const float* kernels, const float* bias, int64_t n, int64_t c_in,
                            int64_t height, int64_t width, int64_t f_out, int64_t patch, int32_t activation,
                            float* out, void* stream) {
  using detail::fail;
  if (n < 0 || c_in < 0 || height < 0 || width < 0 || f_out < 0) return fail(EDGERT_ERR_SHAPE, "adaptive_conv: negative shape");
  if (patch <= 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: patch must be positive, got %lld", (long long)patch);
  if (patch > 256) return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: patch %lld is larger than 256", (long long)patch);
  if (activation != kActNone && activation != kActRelu) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: activation must be 0 (none) or 1 (relu), got %d", activation);
  }
  if (n == 0 || height == 0 || width == 0 || f_out == 0) return EDGERT_OK;
  if (x == nullptr || kernels == nullptr || bias == nullptr || out == nullptr) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "adaptive_conv: null buffer");
  }
  const long long tile = c_in * (patch + 2) * (patch + 2);
  const long long shared_floats = tile + f_out * c_in * 9;
  if (tile > kMaxTile || shared_floats * 4 > 48 * 1024) {
    return fail(EDGERT_ERR_SHAPE, "adaptive_conv (cuda): patch %lld x Cin %lld x F %lld needs %lld bytes of shared memory (max 49152)",
                (long long)patch, (long long)c_in, (long long)f_out, shared_floats * 4);
  }
  const int64_t grid_h = (height + patch - 1) / patch, grid_w = (width + patch - 1) / patch;
  const long long blocks = n * grid_h * grid_w;
  if (blocks > 0x7fffffffLL) return fail(EDGERT_ERR_SHAPE, "adaptive_conv (cuda): too many patches for one launch");
  adaptive_conv_kernel<<<static_cast<unsigned>(blocks), 256, static_cast<size_t>(shared_floats) * 4,
                         cuda_detail::as_stream(stream)>>>(x, kernels, bias, c_in, height, width, f_out, patch, grid_h,
                                                            grid_w, activation, out);
  return cuda_detail::check(cudaGetLastError(), "adaptive_conv launch");
}

}  // namespace edgert::cuda
