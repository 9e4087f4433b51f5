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
  x = x < -87.0f ? -87.0f : x;
  const float n = std::nearbyint(x * 1.44269504088896341f);
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
template <int K>
inline void denoise_axis(const Constellation& c, const float* u, const float* inv_v, int64_t n, float* mean,
                         float* var) {
  for (int64_t s = 0; s < n; ++s) {
    float logits[K];
    float top = -std::numeric_limits<float>::infinity();
    for (int k = 0; k < K; ++k) {
      const float d = u[s] - c.levels[k];
      logits[k] = -d * d * inv_v[s];
      top = logits[k] > top ? logits[k] : top;
    }
    float w_sum = 0, w_a = 0, w_a2 = 0;
    for (int k = 0; k < K; ++k) {
      const float w = exp_nonpositive(logits[k] - top);
      w_sum += w;
      w_a += w * c.levels[k];
      w_a2 += w * c.squares[k];
    }
    const float m = w_a / w_sum;
    mean[s] = m;
    if (var != nullptr) {
      const float second = w_a2 / w_sum - m * m;
      var[s] = second > 0.0f ? second : 0.0f;
    }
  }
}

void denoise_axis_any(const Constellation& c, const float* u, const float* inv_v, int64_t n, float* mean, float* var) {
  switch (c.k) {
    case 2: denoise_axis<2>(c, u, inv_v, n, mean, var); break;
    case 4: denoise_axis<4>(c, u, inv_v, n, mean, var); break;
    default: denoise_axis<8>(c, u, inv_v, n, mean, var); break;
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
// per-vector loops run over contiguous arrays.
struct GroupPrep {
  std::vector<float> h_re, h_im;        // H   [Nr][Nt]
  std::vector<float> gram_re, gram_im;  // (H^H H)^T [Nt][Nt] (column k of H^H H stored as row k)
  std::vector<float> at_re, at_im;      // A_t^T [T][Nr][Nt]
  std::vector<float> mt_re, mt_im;      // M_t^T [T][Nt][Nt], M_t = I - A_t H
  std::vector<float> ratio_m, ratio_a;  // [T] ||M_t||^2/||H||^2, ||A_t||^2/||H||^2
};

void prepare_group(const MMNetShape& s, const cfloat* H, const cfloat* A, const float* theta1, int64_t g,
                   GroupPrep& p) {
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
  p.gram_re.assign(nt * nt, 0.0f);
  p.gram_im.assign(nt * nt, 0.0f);
  for (int64_t k = 0; k < nt; ++k) {
    for (int64_t i = 0; i < nt; ++i) {
      std::complex<double> acc = 0;  // (H^H H)[i][k] = sum_j conj(H[j][i]) H[j][k]
      for (int64_t j = 0; j < nr; ++j) {
        acc += std::conj(std::complex<double>(H[(g * nr + j) * nt + i])) * std::complex<double>(H[(g * nr + j) * nt + k]);
      }
      p.gram_re[k * nt + i] = static_cast<float>(acc.real());
      p.gram_im[k * nt + i] = static_cast<float>(acc.imag());
    }
  }
  p.at_re.resize(T * nr * nt);
  p.at_im.resize(T * nr * nt);
  p.mt_re.resize(T * nt * nt);
  p.mt_im.resize(T * nt * nt);
  p.ratio_m.resize(T);
  p.ratio_a.resize(T);
  std::vector<std::complex<double>> a(nt * nr);
  for (int64_t t = 0; t < T; ++t) {
    double a_norm = 0;
    for (int64_t i = 0; i < nt; ++i) {
      for (int64_t j = 0; j < nr; ++j) {
        std::complex<double> v;
        if (A != nullptr) {
          v = std::complex<double>(A[((t * s.groups + g) * nt + i) * nr + j]);
        } else {
          v = static_cast<double>(theta1[t * s.groups + g]) * std::conj(std::complex<double>(H[(g * nr + j) * nt + i]));
        }
        a[i * nr + j] = v;
        a_norm += std::norm(v);
        p.at_re[(t * nr + j) * nt + i] = static_cast<float>(v.real());
        p.at_im[(t * nr + j) * nt + i] = static_cast<float>(v.imag());
      }
    }
    double m_norm = 0;
    for (int64_t i = 0; i < nt; ++i) {
      for (int64_t k = 0; k < nt; ++k) {
        std::complex<double> acc = i == k ? 1.0 : 0.0;
        for (int64_t j = 0; j < nr; ++j) acc -= a[i * nr + j] * std::complex<double>(H[(g * nr + j) * nt + k]);
        m_norm += std::norm(acc);
        p.mt_re[(t * nt + k) * nt + i] = static_cast<float>(acc.real());
        p.mt_im[(t * nt + k) * nt + i] = static_cast<float>(acc.imag());
      }
    }
    p.ratio_m[t] = static_cast<float>(m_norm * inv_h_norm);
    p.ratio_a[t] = static_cast<float>(a_norm * inv_h_norm);
  }
}

// out[i] += sum_j M^T[j][i] * v[j] (complex, split), i < n_out, j < n_in.
inline void accumulate_matvec(const float* m_re, const float* m_im, const float* v_re, const float* v_im, int64_t n_in,
                              int64_t n_out, float* out_re, float* out_im) {
  for (int64_t j = 0; j < n_in; ++j) {
    const float vr = v_re[j], vi = v_im[j];
    const float* row_re = m_re + j * n_out;
    const float* row_im = m_im + j * n_out;
    for (int64_t i = 0; i < n_out; ++i) {
      out_re[i] += row_re[i] * vr - row_im[i] * vi;
      out_im[i] += row_re[i] * vi + row_im[i] * vr;
    }
  }
}

struct VectorScratch {
  std::vector<float> y_re, y_im, hy_re, hy_im, x_re, x_im, z_re, z_im, u_re, u_im, inv_v;
  explicit VectorScratch(int64_t nr, int64_t nt)
      : y_re(nr), y_im(nr), hy_re(nt), hy_im(nt), x_re(nt), x_im(nt), z_re(nt), z_im(nt), u_re(nt), u_im(nt),
        inv_v(nt) {}
};

void detect_vector(const MMNetShape& s, const GroupPrep& p, const Constellation& c, const cfloat* y,
                   const float* theta2, const float* theta1, float sigma2, int64_t g, int64_t b, bool all_layers,
                   cfloat* x_out, int32_t* decisions, VectorScratch& w) {
  const int64_t nr = s.n_rx, nt = s.n_tx, T = s.layers;
  double yy = 0;
  for (int64_t j = 0; j < nr; ++j) {
    w.y_re[j] = y[j].real();
    w.y_im[j] = y[j].imag();
    yy += static_cast<double>(w.y_re[j]) * w.y_re[j] + static_cast<double>(w.y_im[j]) * w.y_im[j];
  }
  // H^H y: column form sum_j conj(H[j][:]) y[j]
  std::fill(w.hy_re.begin(), w.hy_re.end(), 0.0f);
  std::fill(w.hy_im.begin(), w.hy_im.end(), 0.0f);
  for (int64_t j = 0; j < nr; ++j) {
    const float yr = w.y_re[j], yi = w.y_im[j];
    const float* hr = p.h_re.data() + j * nt;
    const float* hi = p.h_im.data() + j * nt;
    for (int64_t i = 0; i < nt; ++i) {
      w.hy_re[i] += hr[i] * yr + hi[i] * yi;
      w.hy_im[i] += hr[i] * yi - hi[i] * yr;
    }
  }
  std::fill(w.x_re.begin(), w.x_re.end(), 0.0f);
  std::fill(w.x_im.begin(), w.x_im.end(), 0.0f);
  const float noise_floor = static_cast<float>(nr) * sigma2;
  for (int64_t t = 0; t < T; ++t) {
    // z = A_t y + M_t x
    if (theta1 != nullptr) {
      const float th = theta1[t * s.groups + g];
      for (int64_t i = 0; i < nt; ++i) {
        w.z_re[i] = th * w.hy_re[i];
        w.z_im[i] = th * w.hy_im[i];
      }
    } else {
      std::fill(w.z_re.begin(), w.z_re.end(), 0.0f);
      std::fill(w.z_im.begin(), w.z_im.end(), 0.0f);
      accumulate_matvec(p.at_re.data() + t * nr * nt, p.at_im.data() + t * nr * nt, w.y_re.data(), w.y_im.data(), nr,
                        nt, w.z_re.data(), w.z_im.data());
    }
    double residual = yy;
    if (t > 0) {
      accumulate_matvec(p.mt_re.data() + t * nt * nt, p.mt_im.data() + t * nt * nt, w.x_re.data(), w.x_im.data(), nt,
                        nt, w.z_re.data(), w.z_im.data());
      // ||y - Hx||^2 = ||y||^2 - 2 Re(x^H H^H y) + x^H (H^H H) x
      std::fill(w.u_re.begin(), w.u_re.end(), 0.0f);
      std::fill(w.u_im.begin(), w.u_im.end(), 0.0f);
      accumulate_matvec(p.gram_re.data(), p.gram_im.data(), w.x_re.data(), w.x_im.data(), nt, nt, w.u_re.data(),
                        w.u_im.data());
      double cross = 0, quad = 0;
      for (int64_t i = 0; i < nt; ++i) {
        cross += static_cast<double>(w.x_re[i]) * w.hy_re[i] + static_cast<double>(w.x_im[i]) * w.hy_im[i];
        quad += static_cast<double>(w.x_re[i]) * w.u_re[i] + static_cast<double>(w.x_im[i]) * w.u_im[i];
      }
      residual = yy - 2.0 * cross + quad;
    }
    const float excess = std::max(static_cast<float>(residual) - noise_floor, 0.0f);
    const float common = (p.ratio_m[t] * excess + p.ratio_a[t] * sigma2) / static_cast<float>(nt);
    const float* th2 = theta2 + (t * s.groups + g) * nt;
    for (int64_t i = 0; i < nt; ++i) w.inv_v[i] = 1.0f / std::max(th2[i] * common, kMinVariance);
    denoise_axis_any(c, w.z_re.data(), w.inv_v.data(), nt, w.x_re.data(), nullptr);
    denoise_axis_any(c, w.z_im.data(), w.inv_v.data(), nt, w.x_im.data(), nullptr);
    if (all_layers || t == T - 1) {
      cfloat* dst = x_out + ((all_layers ? t * s.groups : 0) + g) * s.batch * nt + b * nt;
      for (int64_t i = 0; i < nt; ++i) dst[i] = cfloat(w.x_re[i], w.x_im[i]);
    }
  }
  if (decisions != nullptr) {
    int32_t* d = decisions + (g * s.batch + b) * nt;
    for (int64_t i = 0; i < nt; ++i) d[i] = nearest_level(c, w.x_re[i]) * c.k + nearest_level(c, w.x_im[i]);
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
  const int64_t total = s.groups * s.batch;
  detail::parallel_for(total, 8, [&](int64_t begin, int64_t end) {
    VectorScratch scratch(s.n_rx, s.n_tx);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / s.batch, b = item % s.batch;
      detect_vector(s, prep[static_cast<size_t>(g)], c, y + (g * s.batch + b) * s.n_rx, theta2, theta1, sigma2[g], g, b,
                    all_layers, x_out, decisions, scratch);
    }
  });
  return EDGERT_OK;
}

}  // namespace cpu
}  // namespace edgert
