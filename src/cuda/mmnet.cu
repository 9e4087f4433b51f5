// MMNet detection and the Gaussian denoiser on CUDA. Same semantics as
// src/kernels/mmnet.cpp (the CPU reference); each detection thread owns one
// received vector and walks the layers with x and z in registers/local memory.
#include <cuda_runtime.h>

#include "cuda/common.cuh"
#include "edgert/kernels.hpp"

namespace edgert::cuda {
namespace {

constexpr int kMaxTx = 64;
constexpr float kMinVariance = 1e-9f;

struct Levels {
  int k;
  float a[8];
  float spacing;
};

__device__ inline void posterior_axis(const Levels& c, float u, float inv_v, float* mean, float* var) {
  float top = -INFINITY;
  for (int k = 0; k < c.k; ++k) {
    const float d = u - c.a[k];
    top = fmaxf(top, -d * d * inv_v);
  }
  float w_sum = 0.f, w_a = 0.f, w_a2 = 0.f;
  for (int k = 0; k < c.k; ++k) {
    const float d = u - c.a[k];
    const float w = __expf(-d * d * inv_v - top);
    w_sum += w;
    w_a += w * c.a[k];
    w_a2 += w * c.a[k] * c.a[k];
  }
  *mean = w_a / w_sum;
  if (var) *var = fmaxf(w_a2 / w_sum - (*mean) * (*mean), 0.f);
}

__device__ inline int nearest(const Levels& c, float u) {
  int i = __float2int_rn(u / c.spacing + 0.5f * (c.k - 1));
  return i < 0 ? 0 : (i >= c.k ? c.k - 1 : i);
}

__global__ void denoise_kernel(const float2* __restrict__ z, const float* __restrict__ var, long long n, Levels c,
                               float2* __restrict__ mean, float* __restrict__ var_out) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float inv_v = 1.0f / fmaxf(var[i], kMinVariance);
    float m_re, m_im, v_re, v_im;
    posterior_axis(c, z[i].x, inv_v, &m_re, var_out ? &v_re : nullptr);
    posterior_axis(c, z[i].y, inv_v, &m_im, var_out ? &v_im : nullptr);
    mean[i] = make_float2(m_re, m_im);
    if (var_out) var_out[i] = v_re + v_im;
  }
}

__device__ inline float2 a_entry(const float2* A, const float* theta1, const float2* H, long long t, long long g,
                                 long long groups, long long nr, long long nt, long long i, long long j) {
  if (A != nullptr) return A[((t * groups + g) * nt + i) * nr + j];
  const float2 h = H[(g * nr + j) * nt + i];
  const float th = theta1[t * groups + g];
  return make_float2(th * h.x, -th * h.y);  // theta1 * conj(H[j][i])
}

// One block per (t, g): ratio[t, g] = (||I - A_t H||^2 / ||H||^2, ||A_t||^2).
__global__ void ratios_kernel(const float2* __restrict__ H, const float2* __restrict__ A,
                              const float* __restrict__ theta1, long long groups, long long nr, long long nt,
                              float2* __restrict__ ratios) {
  const long long t = blockIdx.x / groups, g = blockIdx.x % groups;
  double m_sum = 0, a_sum = 0, h_sum = 0;
  for (long long e = threadIdx.x; e < nt * nt; e += blockDim.x) {
    const long long i = e / nt, k = e % nt;
    double re = i == k ? 1.0 : 0.0, im = 0.0;
    for (long long j = 0; j < nr; ++j) {
      const float2 a = a_entry(A, theta1, H, t, g, groups, nr, nt, i, j);
      const float2 h = H[(g * nr + j) * nt + k];
      re -= (double)a.x * h.x - (double)a.y * h.y;
      im -= (double)a.x * h.y + (double)a.y * h.x;
    }
    m_sum += re * re + im * im;
  }
  for (long long e = threadIdx.x; e < nt * nr; e += blockDim.x) {
    const float2 a = a_entry(A, theta1, H, t, g, groups, nr, nt, e / nr, e % nr);
    a_sum += (double)a.x * a.x + (double)a.y * a.y;
    const float2 h = H[g * nr * nt + e];
    h_sum += (double)h.x * h.x + (double)h.y * h.y;
  }
  __shared__ double s_m[256], s_a[256], s_h[256];
  s_m[threadIdx.x] = m_sum;
  s_a[threadIdx.x] = a_sum;
  s_h[threadIdx.x] = h_sum;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      s_m[threadIdx.x] += s_m[threadIdx.x + s];
      s_a[threadIdx.x] += s_a[threadIdx.x + s];
      s_h[threadIdx.x] += s_h[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double inv = s_h[0] > 0 ? 1.0 / s_h[0] : 0.0;
    ratios[t * groups + g] = make_float2((float)(s_m[0] * inv), (float)s_a[0]);
  }
}

__global__ void detect_kernel(MMNetShape s, const float2* __restrict__ H, const float2* __restrict__ y,
                              const float2* __restrict__ A, const float* __restrict__ theta1,
                              const float* __restrict__ theta2, const float* __restrict__ sigma2,
                              const float2* __restrict__ ratios, Levels c, bool all_layers, float2* __restrict__ x_out,
                              int* __restrict__ decisions) {
  const long long item = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (item >= s.groups * s.batch) return;
  const long long g = item / s.batch, b = item % s.batch;
  const long long nr = s.n_rx, nt = s.n_tx;
  const float2* yv = y + (g * s.batch + b) * nr;
  float2 x[kMaxTx], z[kMaxTx];
  for (long long i = 0; i < nt; ++i) x[i] = make_float2(0.f, 0.f);
  const float s2 = sigma2[g];
  for (long long t = 0; t < s.layers; ++t) {
    for (long long i = 0; i < nt; ++i) z[i] = x[i];
    float rr = 0.f;
    for (long long j = 0; j < nr; ++j) {
      float2 r = yv[j];
      const float2* hrow = H + (g * nr + j) * nt;
      for (long long i = 0; i < nt; ++i) {
        r.x -= hrow[i].x * x[i].x - hrow[i].y * x[i].y;
        r.y -= hrow[i].x * x[i].y + hrow[i].y * x[i].x;
      }
      rr += r.x * r.x + r.y * r.y;
      for (long long i = 0; i < nt; ++i) {
        const float2 a = a_entry(A, theta1, H, t, g, s.groups, nr, nt, i, j);
        z[i].x += a.x * r.x - a.y * r.y;
        z[i].y += a.x * r.y + a.y * r.x;
      }
    }
    const float2 ratio = ratios[t * s.groups + g];
    const float common = (ratio.x * fmaxf(rr - nr * s2, 0.f) + ratio.y * s2) / (float)nt;
    const float* th2 = theta2 + (t * s.groups + g) * nt;
    for (long long i = 0; i < nt; ++i) {
      const float inv_v = 1.0f / fmaxf(th2[i] * common, kMinVariance);
      posterior_axis(c, z[i].x, inv_v, &x[i].x, nullptr);
      posterior_axis(c, z[i].y, inv_v, &x[i].y, nullptr);
    }
    if (all_layers || t == s.layers - 1) {
      float2* dst = x_out + ((all_layers ? t * s.groups : 0) + g) * s.batch * nt + b * nt;
      for (long long i = 0; i < nt; ++i) dst[i] = x[i];
    }
  }
  if (decisions != nullptr) {
    int* d = decisions + (g * s.batch + b) * nt;
    for (long long i = 0; i < nt; ++i) d[i] = nearest(c, x[i].x) * c.k + nearest(c, x[i].y);
  }
}

bool make_levels(int32_t modulation, Levels* c) {
  c->k = qam_levels(modulation, c->a);
  c->spacing = c->k > 1 ? c->a[1] - c->a[0] : 0.f;
  return c->k != 0;
}

}  // namespace

edgert_status gaussian_denoise(const cfloat* z, const float* var, int64_t n, int32_t modulation, cfloat* mean,
                               float* var_out, void* stream) {
  Levels c{};
  if (!make_levels(modulation, &c)) {
    return detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "gaussian_denoise: modulation must be 4, 16 or 64, got %d", modulation);
  }
  if (n < 0) return detail::fail(EDGERT_ERR_SHAPE, "gaussian_denoise: negative length");
  if (n == 0) return EDGERT_OK;
  if (z == nullptr || var == nullptr || mean == nullptr) {
    return detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "gaussian_denoise: null buffer");
  }
  denoise_kernel<<<cuda_detail::blocks_for(n, 256), 256, 0, cuda_detail::as_stream(stream)>>>(
      reinterpret_cast<const float2*>(z), var, n, c, reinterpret_cast<float2*>(mean), var_out);
  return cuda_detail::check(cudaGetLastError(), "gaussian_denoise launch");
}

edgert_status mmnet_detect(const MMNetShape& s, const cfloat* H, const cfloat* y, const cfloat* A,
                           const float* theta1, const float* theta2, const float* sigma2, bool all_layers,
                           cfloat* x_out, int32_t* decisions, void* stream) {
  Levels c{};
  if (!make_levels(s.modulation, &c)) {
    return detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: modulation must be 4, 16 or 64, got %d", s.modulation);
  }
  if (s.layers <= 0 || s.groups < 0 || s.batch < 0 || s.n_rx <= 0 || s.n_tx <= 0) {
    return detail::fail(EDGERT_ERR_SHAPE, "mmnet_detect: bad shape");
  }
  if (s.n_tx > kMaxTx) {
    return detail::fail(EDGERT_ERR_SHAPE, "mmnet_detect (cuda): Nt = %lld exceeds the CUDA kernel's limit of %d users",
                        (long long)s.n_tx, kMaxTx);
  }
  if (s.groups == 0 || s.batch == 0) return EDGERT_OK;
  if ((A == nullptr) == (theta1 == nullptr)) {
    return detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: pass exactly one of A (full form) and theta1 (iid form)");
  }
  cudaStream_t st = cuda_detail::as_stream(stream);
  float2* ratios = nullptr;
  const size_t bytes = sizeof(float2) * static_cast<size_t>(s.layers * s.groups);
  if (edgert_status e = cuda_detail::check(cuda_detail::scratch_alloc(reinterpret_cast<void**>(&ratios), bytes, st),
                                           "mmnet_detect scratch");
      e != EDGERT_OK)
    return e;
  const auto* Hf = reinterpret_cast<const float2*>(H);
  const auto* Af = reinterpret_cast<const float2*>(A);
  ratios_kernel<<<static_cast<unsigned>(s.layers * s.groups), 256, 0, st>>>(Hf, Af, theta1, s.groups, s.n_rx, s.n_tx,
                                                                             ratios);
  const long long vectors = s.groups * s.batch;
  detect_kernel<<<cuda_detail::blocks_for(vectors, 128), 128, 0, st>>>(
      s, Hf, reinterpret_cast<const float2*>(y), Af, theta1, theta2, sigma2, ratios, c, all_layers,
      reinterpret_cast<float2*>(x_out), decisions);
  const cudaError_t launch = cudaGetLastError();
  cudaFreeAsync(ratios, st);
  return cuda_detail::check(launch, "mmnet_detect launch");
}

}  // namespace edgert::cuda
