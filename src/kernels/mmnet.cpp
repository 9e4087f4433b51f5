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
#include "core/fpenv.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"
#include "simd.hpp"  // EDGERT_KERNEL_CLONES: the hot loops are compiled for AVX2+FMA and baseline

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
// Eight symbols at a time with GCC/Clang vector extensions (simd.hpp: AVX on x86-64-v3,
// two SSE/NEON registers otherwise): the scalar loop above does not vectorise
// on its own because of the per-symbol max over the K logits.

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

EDGERT_KERNEL_CLONES void denoise_axis_any(const Constellation& c, const float* u, const float* inv_v, int64_t n,
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

// ---- Register-blocked complex matrix x tile products --------------------
//
// Received vectors are detected in tiles of kLanes vectors that share one channel. A tile
// operand is [row][kLanes] floats per real/imaginary part, so a matrix entry times a tile
// row is one 8-wide multiply-accumulate. Matrices are packed once per channel in blocks of
// kRows rows: for each block and each column j, the kRows real parts then the kRows
// imaginary parts. The product kernel keeps 2 x kRows accumulators (kRows rows x 8 lanes,
// re and im) in registers and reads each tile row once per block: every column costs two
// vector loads, 2 kRows broadcasts and 4 kRows FMAs, so it runs at the FMA rate instead of
// the load or latency limit of a row-at-a-time loop. Padding rows (n_out not a multiple of
// kRows) are zero in the packed matrix; their outputs land in scratch rows and are unused.
constexpr int64_t kRows = 4;

inline int64_t padded_rows(int64_t n) { return (n + kRows - 1) / kRows * kRows; }

// Packs the complex matrix at(i, j), i < n_out, j < n_in, into the block layout above.
template <typename At>
void pack_rows(int64_t n_out, int64_t n_in, At&& at, float* dst) {
  for (int64_t b = 0; b < padded_rows(n_out) / kRows; ++b) {
    for (int64_t j = 0; j < n_in; ++j) {
      float* d = dst + (b * n_in + j) * 2 * kRows;
      for (int64_t q = 0; q < kRows; ++q) {
        const int64_t i = b * kRows + q;
        const cfloat v = i < n_out ? at(i, j) : cfloat(0.0f, 0.0f);
        d[q] = v.real();
        d[kRows + q] = v.imag();
      }
    }
  }
}

inline int64_t packed_size(int64_t n_out, int64_t n_in) { return padded_rows(n_out) * n_in * 2; }

#if defined(__GNUC__)
// out[i][:8] (=|+=) sum_j M[i][j] v[j][:8] for i < padded_rows(n_out); M packed by pack_rows; v and out
// are 8 lanes wide with row strides ldv and ldo (floats).
template <bool kAccumulate>
__attribute__((always_inline)) inline void tile_product(const float* packed, int64_t n_in, int64_t n_out,
                                                        const float* v_re, const float* v_im, int64_t ldv,
                                                        float* out_re, float* out_im, int64_t ldo) {
  static_assert(kRows == 4, "the accumulators below are written out for four rows");
  for (int64_t b = 0; b < padded_rows(n_out) / kRows; ++b) {
    float* o_re = out_re + b * kRows * ldo;
    float* o_im = out_im + b * kRows * ldo;
    v8f r0 = {}, r1 = {}, r2 = {}, r3 = {}, i0 = {}, i1 = {}, i2 = {}, i3 = {};
    if constexpr (kAccumulate) {
      r0 = load8(o_re), r1 = load8(o_re + ldo), r2 = load8(o_re + 2 * ldo), r3 = load8(o_re + 3 * ldo);
      i0 = load8(o_im), i1 = load8(o_im + ldo), i2 = load8(o_im + 2 * ldo), i3 = load8(o_im + 3 * ldo);
    }
    const float* m = packed + b * n_in * 2 * kRows;
    for (int64_t j = 0; j < n_in; ++j, m += 2 * kRows) {
      const v8f vr = load8(v_re + j * ldv), vi = load8(v_im + j * ldv);
      // One statement per product: each contracts into one FMA (r += a*b - c*d in one
      // expression costs a multiply, an FMA and an add without -ffast-math).
      r0 += m[0] * vr;
      r0 -= m[4] * vi;
      i0 += m[0] * vi;
      i0 += m[4] * vr;
      r1 += m[1] * vr;
      r1 -= m[5] * vi;
      i1 += m[1] * vi;
      i1 += m[5] * vr;
      r2 += m[2] * vr;
      r2 -= m[6] * vi;
      i2 += m[2] * vi;
      i2 += m[6] * vr;
      r3 += m[3] * vr;
      r3 -= m[7] * vi;
      i3 += m[3] * vi;
      i3 += m[7] * vr;
    }
    store8(o_re, r0), store8(o_re + ldo, r1), store8(o_re + 2 * ldo, r2), store8(o_re + 3 * ldo, r3);
    store8(o_im, i0), store8(o_im + ldo, i1), store8(o_im + 2 * ldo, i2), store8(o_im + 3 * ldo, i3);
  }
}

typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

__attribute__((always_inline)) inline v4d widen4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof(v));
  return __builtin_convertvector(v, v4d);
}

// residual[l] += sum_{i < nt} x_i (u_i - 2 hy_i) (real part of the complex products), in double.
__attribute__((always_inline)) inline void accumulate_residual(int64_t nt, const float* x_re, const float* x_im,
                                                               const float* u_re, const float* u_im,
                                                               const float* hy_re, const float* hy_im,
                                                               double* residual) {
  v4d lo, hi;
  std::memcpy(&lo, residual, sizeof(lo));
  std::memcpy(&hi, residual + 4, sizeof(hi));
  for (int64_t e = 0; e < nt * kLanes; e += kLanes) {
    lo += widen4(x_re + e) * (widen4(u_re + e) - 2.0 * widen4(hy_re + e)) +
          widen4(x_im + e) * (widen4(u_im + e) - 2.0 * widen4(hy_im + e));
    hi += widen4(x_re + e + 4) * (widen4(u_re + e + 4) - 2.0 * widen4(hy_re + e + 4)) +
          widen4(x_im + e + 4) * (widen4(u_im + e + 4) - 2.0 * widen4(hy_im + e + 4));
  }
  std::memcpy(residual, &lo, sizeof(lo));
  std::memcpy(residual + 4, &hi, sizeof(hi));
}
#else
template <bool kAccumulate>
inline void tile_product(const float* packed, int64_t n_in, int64_t n_out, const float* v_re, const float* v_im,
                         int64_t ldv, float* out_re, float* out_im, int64_t ldo) {
  for (int64_t b = 0; b < padded_rows(n_out) / kRows; ++b) {
    for (int64_t q = 0; q < kRows; ++q) {
      float* o_re = out_re + (b * kRows + q) * ldo;
      float* o_im = out_im + (b * kRows + q) * ldo;
      for (int64_t l = 0; l < kLanes; ++l) {
        float acc_re = kAccumulate ? o_re[l] : 0.0f, acc_im = kAccumulate ? o_im[l] : 0.0f;
        for (int64_t j = 0; j < n_in; ++j) {
          const float* m = packed + (b * n_in + j) * 2 * kRows;
          acc_re += m[q] * v_re[j * ldv + l] - m[kRows + q] * v_im[j * ldv + l];
          acc_im += m[q] * v_im[j * ldv + l] + m[kRows + q] * v_re[j * ldv + l];
        }
        o_re[l] = acc_re;
        o_im[l] = acc_im;
      }
    }
  }
}

inline void accumulate_residual(int64_t nt, const float* x_re, const float* x_im, const float* u_re,
                                const float* u_im, const float* hy_re, const float* hy_im, double* residual) {
  for (int64_t e = 0; e < nt * kLanes; ++e) {
    residual[e % kLanes] += double(x_re[e]) * (double(u_re[e]) - 2.0 * hy_re[e]) +
                            double(x_im[e]) * (double(u_im[e]) - 2.0 * hy_im[e]);
  }
}
#endif

// Channel-dependent quantities for one group: the matrices of the per-vector work packed
// for tile_product, and the Frobenius ratios of the noise estimate.
struct GroupPrep {
  std::vector<float> hh;                // H^H [Nt][Nr], packed
  std::vector<float> gram;              // H^H H [Nt][Nt], packed
  std::vector<float> a;                 // A_t [T][Nt][Nr], packed per layer (full form only)
  std::vector<float> m;                 // M_t = I - A_t H [T][Nt][Nt], packed per layer
  std::vector<float> ratio_m, ratio_a;  // [T] ||M_t||^2/||H||^2, ||A_t||^2 (E||A_t n||^2 / sigma2)
};

EDGERT_KERNEL_CLONES void prepare_group(const MMNetShape& s, const cfloat* H, const cfloat* A, const float* theta1,
                                       int64_t g, GroupPrep& p) {
  const int64_t nr = s.n_rx, nt = s.n_tx, T = s.layers;
  // The channel products (H^H H, A_t H) run through tile_product with H's columns as the
  // lanes: H is copied split into re/im with its columns zero-padded to a multiple of kLanes.
  const int64_t cols = (nt + kLanes - 1) / kLanes * kLanes, rows = padded_rows(nt);
  const cfloat* h = H + g * nr * nt;
  std::vector<float> h_re(nr * cols, 0.0f), h_im(nr * cols, 0.0f);
  double h_norm = 0;
  for (int64_t j = 0; j < nr; ++j) {
    for (int64_t k = 0; k < nt; ++k) {
      const cfloat v = h[j * nt + k];
      h_re[j * cols + k] = v.real();
      h_im[j * cols + k] = v.imag();
      h_norm += std::norm(std::complex<double>(v));
    }
  }
  const double inv_h_norm = h_norm > 0 ? 1.0 / h_norm : 0.0;
  // out = packed x H, out [rows][cols]
  auto times_h = [&](const float* packed, float* out_re, float* out_im) {
    for (int64_t k = 0; k < cols; k += kLanes) {
      tile_product<false>(packed, nr, nt, h_re.data() + k, h_im.data() + k, cols, out_re + k, out_im + k, cols);
    }
  };
  p.hh.resize(packed_size(nt, nr));
  pack_rows(nt, nr, [&](int64_t i, int64_t j) { return std::conj(h[j * nt + i]); }, p.hh.data());
  std::vector<float> gram_re(rows * cols), gram_im(rows * cols);
  times_h(p.hh.data(), gram_re.data(), gram_im.data());
  p.gram.resize(packed_size(nt, nt));
  pack_rows(nt, nt, [&](int64_t i, int64_t k) { return cfloat(gram_re[i * cols + k], gram_im[i * cols + k]); },
            p.gram.data());
  if (A != nullptr) p.a.resize(T * packed_size(nt, nr));
  p.m.resize(T * packed_size(nt, nt));
  p.ratio_m.resize(T);
  p.ratio_a.resize(T);
  std::vector<float> ah_re(rows * cols), ah_im(rows * cols);
  for (int64_t t = 0; t < T; ++t) {
    // M_t = I - A_t H; for the iid form A_t H = theta1_t H^H H.
    double a_norm = 0;
    float scale = 1.0f;
    const float* ah_r = gram_re.data();
    const float* ah_i = gram_im.data();
    if (A != nullptr) {
      const cfloat* a = A + (t * s.groups + g) * nt * nr;
      for (int64_t e = 0; e < nt * nr; ++e) a_norm += std::norm(std::complex<double>(a[e]));
      float* packed = p.a.data() + t * packed_size(nt, nr);
      pack_rows(nt, nr, [&](int64_t i, int64_t j) { return a[i * nr + j]; }, packed);
      times_h(packed, ah_re.data(), ah_im.data());
      ah_r = ah_re.data();
      ah_i = ah_im.data();
    } else {
      scale = theta1[t * s.groups + g];
      a_norm = double(scale) * scale * h_norm;
    }
    double m_norm = 0;
    pack_rows(nt, nt, [&](int64_t i, int64_t k) {
      const cfloat v(float(i == k) - scale * ah_r[i * cols + k], -scale * ah_i[i * cols + k]);
      m_norm += std::norm(std::complex<double>(v));
      return v;
    }, p.m.data() + t * packed_size(nt, nt));
    p.ratio_m[t] = static_cast<float>(m_norm * inv_h_norm);
    p.ratio_a[t] = static_cast<float>(a_norm);
  }
}

struct TileScratch {
  // Rows padded to kRows: tile_product writes whole row blocks.
  std::vector<float> y_re, y_im, hy_re, hy_im, x_re, x_im, z_re, z_im, u_re, u_im, inv_v;
  TileScratch(int64_t nr, int64_t nt)
      : y_re(nr * kLanes), y_im(nr * kLanes), hy_re(padded_rows(nt) * kLanes), hy_im(padded_rows(nt) * kLanes),
        x_re(nt * kLanes), x_im(nt * kLanes), z_re(padded_rows(nt) * kLanes), z_im(padded_rows(nt) * kLanes),
        u_re(padded_rows(nt) * kLanes), u_im(padded_rows(nt) * kLanes), inv_v(nt * kLanes) {}
};

EDGERT_KERNEL_CLONES void detect_tile(const MMNetShape& s, const GroupPrep& p, const Constellation& c, const cfloat* y,
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
  tile_product<false>(p.hh.data(), nr, nt, w.y_re.data(), w.y_im.data(), kLanes, w.hy_re.data(), w.hy_im.data(),
                      kLanes);
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
      tile_product<false>(p.a.data() + t * packed_size(nt, nr), nr, nt, w.y_re.data(), w.y_im.data(), kLanes,
                          w.z_re.data(), w.z_im.data(), kLanes);
    }
    double residual[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) residual[l] = yy[l];
    if (t > 0) {
      tile_product<true>(p.m.data() + t * packed_size(nt, nt), nt, nt, w.x_re.data(), w.x_im.data(), kLanes,
                         w.z_re.data(), w.z_im.data(), kLanes);
      // ||y - Hx||^2 = ||y||^2 - 2 Re(x^H H^H y) + x^H (H^H H) x, accumulated in double:
      // at high SNR it is a small difference of large terms.
      tile_product<false>(p.gram.data(), nt, nt, w.x_re.data(), w.x_im.data(), kLanes, w.u_re.data(), w.u_im.data(),
                          kLanes);
      accumulate_residual(nt, w.x_re.data(), w.x_im.data(), w.u_re.data(), w.u_im.data(), w.hy_re.data(),
                          w.hy_im.data(), residual);
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

#include "mmnet_train.inl"

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
    const detail::FlushDenormals flush;
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
  const int64_t tiles_per_group = (s.batch + kLanes - 1) / kLanes;
  auto detect_group_tiles = [&](const GroupPrep& prep, int64_t g, int64_t tile_begin, int64_t tile_end,
                                TileScratch& scratch) {
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t b0 = tile * kLanes, lanes = std::min(kLanes, s.batch - b0);
      detect_tile(s, prep, c, y + (g * s.batch + b0) * s.n_rx, lanes, theta2, theta1, sigma2[g], g, b0, all_layers,
                  x_out, decisions, scratch);
    }
  };
  if (s.groups >= 2 * detail::max_threads()) {
    // Enough channels for every thread: each prepares a channel and detects all its vectors
    // while the packed matrices are still in its cache.
    detail::parallel_for(s.groups, 1, [&](int64_t begin, int64_t end) {
      const detail::FlushDenormals flush;
      GroupPrep prep;
      TileScratch scratch(s.n_rx, s.n_tx);
      for (int64_t g = begin; g < end; ++g) {
        prepare_group(s, H, A, theta1, g, prep);
        detect_group_tiles(prep, g, 0, tiles_per_group, scratch);
      }
    });
    return EDGERT_OK;
  }
  // Few channels: prepare them all, then spread the tiles of every channel over the threads.
  std::vector<GroupPrep> prep(static_cast<size_t>(s.groups));
  detail::parallel_for(s.groups, 1, [&](int64_t begin, int64_t end) {
    const detail::FlushDenormals flush;
    for (int64_t g = begin; g < end; ++g) prepare_group(s, H, A, theta1, g, prep[static_cast<size_t>(g)]);
  });
  detail::parallel_for(s.groups * tiles_per_group, 1, [&](int64_t begin, int64_t end) {
    const detail::FlushDenormals flush;
    TileScratch scratch(s.n_rx, s.n_tx);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / tiles_per_group, tile = item % tiles_per_group;
      detect_group_tiles(prep[static_cast<size_t>(g)], g, tile, tile + 1, scratch);
    }
  });
  return EDGERT_OK;
}

}  // namespace cpu
}  // namespace edgert
