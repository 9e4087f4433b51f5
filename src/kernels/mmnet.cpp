// MMNet detection and the complex Gaussian (QAM posterior) denoiser on the CPU.
//
// Per layer the detector needs z = x + A_t (y - H x) and ||y - H x||^2. Both are
// rewritten so that the per-vector work avoids the Nr x Nt products with x:
//   z = M_t x + A_t y,            M_t = I - A_t H            (Nt x Nt)
//   ||y - H x||^2 = ||y||^2 - 2 Re(x^H H^H y) + x^H (H^H H) x
// M_t, H^H H and the Frobenius ratios are computed once per channel; A_t y once
// per vector and layer (for the iid form A_t y = theta1_t H^H y is free). The
// residual norm is accumulated in double: it is a difference of large terms at
// high SNR.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"

// Multiversioned hot loops: AVX2+FMA where the CPU has it, baseline otherwise
// (ifunc dispatch at load time, GCC on x86-64 Linux only).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
// flatten: the helpers (templates) are inlined into each clone, so they are compiled for its target too.
#define EDGERT_MMNET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define EDGERT_MMNET_CLONES
#endif

namespace edgert {

int qam_levels(int32_t modulation, float* levels) {
  int k;
  switch (modulation) {
    case 4: k = 2; break;
    case 16: k = 4; break;
    case 64: k = 8; break;
    default: return 0;
  }
  const double scale = std::sqrt(3.0 / (2.0 * (modulation - 1)));
  for (int i = 0; i < k; ++i) levels[i] = static_cast<float>((2 * i - k + 1) * scale);
  return k;
}

namespace cpu {

using detail::fail;

namespace {

// The variance floor keeps the posterior well defined when the estimated noise
// vanishes (noise-free input, sigma2 = 0): the posterior then collapses onto the
// nearest constellation point, as the limit v -> 0 does.
constexpr float kMinVariance = 1e-9f;

// exp(x) for x <= 0, branch-free so that loops over symbols vectorise:
// x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n through the
// exponent bits. Relative error below 3e-7; returns 0 below -87.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  // round to nearest through the 1.5 * 2^23 trick: no libm call, so the loop vectorises
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

struct Constellation {
  int k = 0;  // levels per real axis
  float levels[8] = {};
  float squares[8] = {};
  float spacing = 0;  // distance between adjacent levels
};

Constellation make_constellation(int32_t modulation) {
  Constellation c;
  c.k = qam_levels(modulation, c.levels);
  for (int i = 0; i < c.k; ++i) c.squares[i] = c.levels[i] * c.levels[i];
  c.spacing = c.k > 1 ? c.levels[1] - c.levels[0] : 0.0f;
  return c;
}

// Posterior mean and variance of one real axis value u of a PAM symbol observed
// with real noise variance v/2 (v = complex variance): weights exp(-(u-a)^2/v)
// normalised by their maximum (log-sum-exp).
template <int K, bool kVariance>
inline void denoise_axis_scalar(const Constellation& c, const float* u, const float* inv_v, int64_t n, float* mean,
                                float* var) {
  for (int64_t s = 0; s < n; ++s) {
    float logits[K];
    float top = -std::numeric_limits<float>::infinity();
    for (int k = 0; k < K; ++k) {
      const float d = u[s] - c.levels[k];
      logits[k] = -d * d * inv_v[s];
      top = std::max(top, logits[k]);
    }
    float w_sum = 0, w_a = 0, w_a2 = 0;
    for (int k = 0; k < K; ++k) {
      const float w = exp_nonpositive(logits[k] - top);
      w_sum += w;
      w_a += w * c.levels[k];
      w_a2 += w * c.squares[k];
    }
    const float inv_sum = 1.0f / w_sum;
    const float m = w_a * inv_sum;
    mean[s] = m;
    if constexpr (kVariance) var[s] = std::max(w_a2 * inv_sum - m * m, 0.0f);
  }
}

#if defined(__GNUC__)
// Internal (anonymous-namespace) helpers only, always inlined: the vector ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
// Eight symbols at a time with GCC/Clang vector extensions (AVX on x86-64-v3,
// two SSE/NEON registers otherwise): the scalar loop above does not vectorise
// on its own because of the per-symbol max over the K logits.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

__attribute__((always_inline)) inline v8f exp_nonpositive(v8f x) {
  const v8f lo = v8f{} - 87.0f;
  x = x < lo ? lo : x;
  const v8f n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const v8f r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  v8f p = v8f{} + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

template <int K, bool kVariance>
inline void denoise_axis(const Constellation& c, const float* u, const float* inv_v, int64_t n, float* mean,
                         float* var) {
  int64_t s = 0;
  for (; s + 8 <= n; s += 8) {
    v8f uu, iv;
    std::memcpy(&uu, u + s, sizeof(uu));
    std::memcpy(&iv, inv_v + s, sizeof(iv));
    v8f logits[K];
    v8f top = v8f{} - std::numeric_limits<float>::infinity();
    for (int k = 0; k < K; ++k) {
      const v8f d = uu - c.levels[k];
      logits[k] = -d * d * iv;
      top = logits[k] > top ? logits[k] : top;
    }
    v8f w_sum = {}, w_a = {}, w_a2 = {};
    for (int k = 0; k < K; ++k) {
      const v8f w = exp_nonpositive(logits[k] - top);
      w_sum += w;
      w_a += w * c.levels[k];
      w_a2 += w * c.squares[k];
    }
    const v8f inv_sum = 1.0f / w_sum;
    const v8f m = w_a * inv_sum;
    std::memcpy(mean + s, &m, sizeof(m));
    if constexpr (kVariance) {
      v8f second = w_a2 * inv_sum - m * m;
      second = second > 0.0f ? second : v8f{};
      std::memcpy(var + s, &second, sizeof(second));
    }
  }
  denoise_axis_scalar<K, kVariance>(c, u + s, inv_v + s, n - s, mean + s, kVariance ? var + s : nullptr);
}
#else
template <int K, bool kVariance>
inline void denoise_axis(const Constellation& c, const float* u, const float* inv_v, int64_t n, float* mean,
                         float* var) {
  denoise_axis_scalar<K, kVariance>(c, u, inv_v, n, mean, var);
}
#endif

template <int K>
inline void denoise_axis_k(const Constellation& c, const float* u, const float* inv_v, int64_t n, float* mean,
                           float* var) {
  if (var != nullptr) {
    denoise_axis<K, true>(c, u, inv_v, n, mean, var);
  } else {
    denoise_axis<K, false>(c, u, inv_v, n, mean, nullptr);
  }
}

EDGERT_MMNET_CLONES void denoise_axis_any(const Constellation& c, const float* u, const float* inv_v, int64_t n,
                                          float* mean, float* var) {
  switch (c.k) {
    case 2: denoise_axis_k<2>(c, u, inv_v, n, mean, var); break;
    case 4: denoise_axis_k<4>(c, u, inv_v, n, mean, var); break;
    default: denoise_axis_k<8>(c, u, inv_v, n, mean, var); break;
  }
}

inline int32_t nearest_level(const Constellation& c, float u) {
  // levels are (2i - k + 1) * spacing / 2, so i = round(u / spacing + (k - 1) / 2)
  const float pos = u / c.spacing + 0.5f * static_cast<float>(c.k - 1);
  int32_t i = static_cast<int32_t>(std::nearbyint(pos));
  return i < 0 ? 0 : (i >= c.k ? c.k - 1 : i);
}

bool finite_nonneg(float v) { return std::isfinite(v) && v >= 0.0f; }

// Channel-dependent quantities for one group, split real/imaginary so that the
// per-tile loops run over contiguous arrays.
struct GroupPrep {
  std::vector<float> h_re, h_im;        // H   [Nr][Nt]
  std::vector<float> gram_re, gram_im;  // H^H H [Nt][Nt]
  std::vector<float> a_re, a_im;        // A_t [T][Nt][Nr]
  std::vector<float> m_re, m_im;        // M_t [T][Nt][Nt], M_t = I - A_t H
  std::vector<float> ratio_m, ratio_a;  // [T] ||M_t||^2/||H||^2, ||A_t||^2 (E||A_t n||^2 / sigma2)
};

EDGERT_MMNET_CLONES void prepare_group(const MMNetShape& s, const cfloat* H, const cfloat* A, const float* theta1,
                                       int64_t g, GroupPrep& p) {
  const int64_t nr = s.n_rx, nt = s.n_tx, T = s.layers;
  p.h_re.resize(nr * nt);
  p.h_im.resize(nr * nt);
  double h_norm = 0;
  for (int64_t j = 0; j < nr * nt; ++j) {
    const cfloat v = H[g * nr * nt + j];
    p.h_re[j] = v.real();
    p.h_im[j] = v.imag();
    h_norm += std::norm(std::complex<double>(v));
  }
  const double inv_h_norm = h_norm > 0 ? 1.0 / h_norm : 0.0;
  // (H^H H)[i][k] = sum_j conj(H[j][i]) H[j][k]; the inner loop over k is contiguous.
  p.gram_re.assign(nt * nt, 0.0f);
  p.gram_im.assign(nt * nt, 0.0f);
  for (int64_t j = 0; j < nr; ++j) {
    const float* hr = p.h_re.data() + j * nt;
    const float* hi = p.h_im.data() + j * nt;
    for (int64_t i = 0; i < nt; ++i) {
      const float cr = hr[i], ci = -hi[i];
      float* gr = p.gram_re.data() + i * nt;
      float* gi = p.gram_im.data() + i * nt;
      for (int64_t k = 0; k < nt; ++k) {
        gr[k] += cr * hr[k] - ci * hi[k];
        gi[k] += cr * hi[k] + ci * hr[k];
      }
    }
  }
  p.a_re.resize(T * nt * nr);
  p.a_im.resize(T * nt * nr);
  p.m_re.assign(T * nt * nt, 0.0f);
  p.m_im.assign(T * nt * nt, 0.0f);
  p.ratio_m.resize(T);
  p.ratio_a.resize(T);
  for (int64_t t = 0; t < T; ++t) {
    float* ar = p.a_re.data() + t * nt * nr;
    float* ai = p.a_im.data() + t * nt * nr;
    double a_norm = 0;
    for (int64_t i = 0; i < nt; ++i) {
      for (int64_t j = 0; j < nr; ++j) {
        cfloat v;
        if (A != nullptr) {
          v = A[((t * s.groups + g) * nt + i) * nr + j];
        } else {
          v = theta1[t * s.groups + g] * std::conj(H[(g * nr + j) * nt + i]);
        }
        ar[i * nr + j] = v.real();
        ai[i * nr + j] = v.imag();
        a_norm += std::norm(std::complex<double>(v));
      }
    }
    float* mr = p.m_re.data() + t * nt * nt;
    float* mi = p.m_im.data() + t * nt * nt;
    for (int64_t i = 0; i < nt; ++i) {
      float* row_r = mr + i * nt;
      float* row_i = mi + i * nt;
      row_r[i] = 1.0f;
      for (int64_t j = 0; j < nr; ++j) {
        const float xr = ar[i * nr + j], xi = ai[i * nr + j];
        const float* hr = p.h_re.data() + j * nt;
        const float* hi = p.h_im.data() + j * nt;
        for (int64_t k = 0; k < nt; ++k) {
          row_r[k] -= xr * hr[k] - xi * hi[k];
          row_i[k] -= xr * hi[k] + xi * hr[k];
        }
      }
    }
    double m_norm = 0;
    for (int64_t e = 0; e < nt * nt; ++e) m_norm += double(mr[e]) * mr[e] + double(mi[e]) * mi[e];
    p.ratio_m[t] = static_cast<float>(m_norm * inv_h_norm);
    p.ratio_a[t] = static_cast<float>(a_norm);
  }
}

// Received vectors are detected in tiles of kLanes that share one channel; every
// per-tile array is [row][kLanes], so each complex multiply-accumulate of a
// matrix entry with a tile row is one 8-wide FMA sequence. Partial tiles are
// zero-padded (a zero y is harmless) and only their valid lanes are written.
constexpr int64_t kLanes = 8;

// out[i][:] (=|+=) sum_j M[i][j] * v[j][:], complex split, M [n_out][n_in] row-major.
template <bool kAccumulate>
inline void tile_matvec(const float* m_re, const float* m_im, const float* v_re, const float* v_im, int64_t n_in,
                        int64_t n_out, float* out_re, float* out_im) {
  for (int64_t i = 0; i < n_out; ++i) {
    float acc_re[kLanes], acc_im[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      acc_re[l] = kAccumulate ? out_re[i * kLanes + l] : 0.0f;
      acc_im[l] = kAccumulate ? out_im[i * kLanes + l] : 0.0f;
    }
    const float* row_re = m_re + i * n_in;
    const float* row_im = m_im + i * n_in;
    for (int64_t j = 0; j < n_in; ++j) {
      const float mr = row_re[j], mi = row_im[j];
      const float* vr = v_re + j * kLanes;
      const float* vi = v_im + j * kLanes;
      for (int64_t l = 0; l < kLanes; ++l) {
        acc_re[l] += mr * vr[l] - mi * vi[l];
        acc_im[l] += mr * vi[l] + mi * vr[l];
      }
    }
    for (int64_t l = 0; l < kLanes; ++l) {
      out_re[i * kLanes + l] = acc_re[l];
      out_im[i * kLanes + l] = acc_im[l];
    }
  }
}

struct TileScratch {
  std::vector<float> y_re, y_im, hy_re, hy_im, x_re, x_im, z_re, z_im, u_re, u_im, inv_v;
  TileScratch(int64_t nr, int64_t nt)
      : y_re(nr * kLanes), y_im(nr * kLanes), hy_re(nt * kLanes), hy_im(nt * kLanes), x_re(nt * kLanes),
        x_im(nt * kLanes), z_re(nt * kLanes), z_im(nt * kLanes), u_re(nt * kLanes), u_im(nt * kLanes),
        inv_v(nt * kLanes) {}
};

EDGERT_MMNET_CLONES void detect_tile(const MMNetShape& s, const GroupPrep& p, const Constellation& c, const cfloat* y,
                                     int64_t lanes, const float* theta2, const float* theta1, float sigma2, int64_t g,
                                     int64_t b0, bool all_layers, cfloat* x_out, int32_t* decisions, TileScratch& w) {
  const int64_t nr = s.n_rx, nt = s.n_tx, T = s.layers;
  double yy[kLanes] = {};
  for (int64_t j = 0; j < nr; ++j) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const cfloat v = l < lanes ? y[l * nr + j] : cfloat(0.0f, 0.0f);
      w.y_re[j * kLanes + l] = v.real();
      w.y_im[j * kLanes + l] = v.imag();
    }
  }
  for (int64_t l = 0; l < lanes; ++l) {
    for (int64_t j = 0; j < nr; ++j) yy[l] += std::norm(std::complex<double>(y[l * nr + j]));
  }
  // H^H y: hy[i] = sum_j conj(H[j][i]) y[j]
  std::fill(w.hy_re.begin(), w.hy_re.end(), 0.0f);
  std::fill(w.hy_im.begin(), w.hy_im.end(), 0.0f);
  for (int64_t j = 0; j < nr; ++j) {
    const float* yr = w.y_re.data() + j * kLanes;
    const float* yi = w.y_im.data() + j * kLanes;
    for (int64_t i = 0; i < nt; ++i) {
      const float hr = p.h_re[j * nt + i], hi = p.h_im[j * nt + i];
      float* dr = w.hy_re.data() + i * kLanes;
      float* di = w.hy_im.data() + i * kLanes;
      for (int64_t l = 0; l < kLanes; ++l) {
        dr[l] += hr * yr[l] + hi * yi[l];
        di[l] += hr * yi[l] - hi * yr[l];
      }
    }
  }
  std::fill(w.x_re.begin(), w.x_re.end(), 0.0f);
  std::fill(w.x_im.begin(), w.x_im.end(), 0.0f);
  const float noise_floor = static_cast<float>(nr) * sigma2;
  const int64_t n_sym = nt * kLanes;
  for (int64_t t = 0; t < T; ++t) {
    // z = A_t y + M_t x
    if (theta1 != nullptr) {
      const float th = theta1[t * s.groups + g];
      for (int64_t e = 0; e < n_sym; ++e) {
        w.z_re[e] = th * w.hy_re[e];
        w.z_im[e] = th * w.hy_im[e];
      }
    } else {
      tile_matvec<false>(p.a_re.data() + t * nt * nr, p.a_im.data() + t * nt * nr, w.y_re.data(), w.y_im.data(), nr,
                         nt, w.z_re.data(), w.z_im.data());
    }
    double residual[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) residual[l] = yy[l];
    if (t > 0) {
      tile_matvec<true>(p.m_re.data() + t * nt * nt, p.m_im.data() + t * nt * nt, w.x_re.data(), w.x_im.data(), nt, nt,
                        w.z_re.data(), w.z_im.data());
      // ||y - Hx||^2 = ||y||^2 - 2 Re(x^H H^H y) + x^H (H^H H) x, accumulated in double:
      // at high SNR it is a small difference of large terms.
      tile_matvec<false>(p.gram_re.data(), p.gram_im.data(), w.x_re.data(), w.x_im.data(), nt, nt, w.u_re.data(),
                         w.u_im.data());
      for (int64_t i = 0; i < nt; ++i) {
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t e = i * kLanes + l;
          const double xr = w.x_re[e], xi = w.x_im[e];
          residual[l] += xr * (double(w.u_re[e]) - 2.0 * w.hy_re[e]) + xi * (double(w.u_im[e]) - 2.0 * w.hy_im[e]);
        }
      }
    }
    float common[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      const float excess = std::max(static_cast<float>(residual[l]) - noise_floor, 0.0f);
      common[l] = (p.ratio_m[t] * excess + p.ratio_a[t] * sigma2) / static_cast<float>(nt);
    }
    const float* th2 = theta2 + (t * s.groups + g) * nt;
    for (int64_t i = 0; i < nt; ++i) {
      for (int64_t l = 0; l < kLanes; ++l) w.inv_v[i * kLanes + l] = 1.0f / std::max(th2[i] * common[l], kMinVariance);
    }
    denoise_axis_any(c, w.z_re.data(), w.inv_v.data(), n_sym, w.x_re.data(), nullptr);
    denoise_axis_any(c, w.z_im.data(), w.inv_v.data(), n_sym, w.x_im.data(), nullptr);
    if (all_layers || t == T - 1) {
      cfloat* dst = x_out + ((all_layers ? t * s.groups : 0) + g) * s.batch * nt + b0 * nt;
      for (int64_t l = 0; l < lanes; ++l) {
        for (int64_t i = 0; i < nt; ++i) dst[l * nt + i] = cfloat(w.x_re[i * kLanes + l], w.x_im[i * kLanes + l]);
      }
    }
  }
  if (decisions != nullptr) {
    int32_t* d = decisions + (g * s.batch + b0) * nt;
    for (int64_t l = 0; l < lanes; ++l) {
      for (int64_t i = 0; i < nt; ++i) {
        const int64_t e = i * kLanes + l;
        d[l * nt + i] = nearest_level(c, w.x_re[e]) * c.k + nearest_level(c, w.x_im[e]);
      }
    }
  }
}

}  // namespace

edgert_status gaussian_denoise(const cfloat* z, const float* var, int64_t n, int32_t modulation, cfloat* mean,
                               float* var_out) {
  const Constellation c = make_constellation(modulation);
  if (c.k == 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "gaussian_denoise: modulation must be 4, 16 or 64, got %d", modulation);
  if (n < 0) return fail(EDGERT_ERR_SHAPE, "gaussian_denoise: negative length %lld", (long long)n);
  if (n == 0) return EDGERT_OK;
  if (z == nullptr || var == nullptr || mean == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "gaussian_denoise: null buffer");
  for (int64_t i = 0; i < n; ++i) {
    if (!finite_nonneg(var[i]) || !std::isfinite(z[i].real()) || !std::isfinite(z[i].imag())) {
      return fail(EDGERT_ERR_INVALID_ARGUMENT,
                  "gaussian_denoise: element %lld has z = (%g, %g), var = %g (need finite z and finite var >= 0)",
                  (long long)i, z[i].real(), z[i].imag(), var[i]);
    }
  }
  constexpr int64_t kChunk = 256;
  detail::parallel_for((n + kChunk - 1) / kChunk, 16, [&](int64_t begin, int64_t end) {
    float re[kChunk], im[kChunk], inv_v[kChunk], m_re[kChunk], m_im[kChunk], v_re[kChunk], v_im[kChunk];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t i0 = chunk * kChunk, len = std::min(kChunk, n - i0);
      for (int64_t i = 0; i < len; ++i) {
        re[i] = z[i0 + i].real();
        im[i] = z[i0 + i].imag();
        inv_v[i] = 1.0f / std::max(var[i0 + i], kMinVariance);
      }
      denoise_axis_any(c, re, inv_v, len, m_re, var_out ? v_re : nullptr);
      denoise_axis_any(c, im, inv_v, len, m_im, var_out ? v_im : nullptr);
      for (int64_t i = 0; i < len; ++i) mean[i0 + i] = cfloat(m_re[i], m_im[i]);
      if (var_out != nullptr) {
        for (int64_t i = 0; i < len; ++i) var_out[i0 + i] = v_re[i] + v_im[i];
      }
    }
  });
  return EDGERT_OK;
}

edgert_status mmnet_detect(const MMNetShape& s, const cfloat* H, const cfloat* y, const cfloat* A,
                           const float* theta1, const float* theta2, const float* sigma2, bool all_layers,
                           cfloat* x_out, int32_t* decisions) {
  const Constellation c = make_constellation(s.modulation);
  if (c.k == 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: modulation must be 4, 16 or 64, got %d", s.modulation);
  if (s.layers <= 0) return fail(EDGERT_ERR_SHAPE, "mmnet_detect: need at least one layer, got T = %lld", (long long)s.layers);
  if (s.groups < 0 || s.batch < 0 || s.n_rx <= 0 || s.n_tx <= 0) {
    return fail(EDGERT_ERR_SHAPE, "mmnet_detect: bad shape G=%lld B=%lld Nr=%lld Nt=%lld (need G, B >= 0, Nr, Nt >= 1)",
                (long long)s.groups, (long long)s.batch, (long long)s.n_rx, (long long)s.n_tx);
  }
  if (s.groups == 0 || s.batch == 0) return EDGERT_OK;  // (empty arrays may carry null pointers)
  if ((A == nullptr) == (theta1 == nullptr)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: pass exactly one of A (full form) and theta1 (iid form)");
  }
  if (H == nullptr || y == nullptr || theta2 == nullptr || sigma2 == nullptr || x_out == nullptr) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: null buffer");
  }
  for (int64_t g = 0; g < s.groups; ++g) {
    if (!finite_nonneg(sigma2[g])) {
      return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_detect: sigma2[%lld] = %g (need finite >= 0)", (long long)g, sigma2[g]);
    }
  }
  std::vector<GroupPrep> prep(static_cast<size_t>(s.groups));
  detail::parallel_for(s.groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) prepare_group(s, H, A, theta1, g, prep[static_cast<size_t>(g)]);
  });
  const int64_t tiles_per_group = (s.batch + kLanes - 1) / kLanes;
  detail::parallel_for(s.groups * tiles_per_group, 1, [&](int64_t begin, int64_t end) {
    TileScratch scratch(s.n_rx, s.n_tx);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / tiles_per_group, b0 = (item % tiles_per_group) * kLanes;
      const int64_t lanes = std::min(kLanes, s.batch - b0);
      detect_tile(s, prep[static_cast<size_t>(g)], c, y + (g * s.batch + b0) * s.n_rx, lanes, theta2, theta1,
                  sigma2[g], g, b0, all_layers, x_out, decisions, scratch);
    }
  });
  return EDGERT_OK;
}

}  // namespace cpu
}  // namespace edgert
