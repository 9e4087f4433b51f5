// MMNet training on the CPU: the forward of mmnet_train_forward (full-A form, a noise
// variance per vector) recording a tape, and its backward to A and theta2. Included by
// mmnet.cpp inside its anonymous namespace: it reuses the packed channel matrices and the
// register-blocked tile products of detection.
//
// Forward, per vector and layer t (x_{-1} = 0):
//   z_t = A_t y + M_t x_{t-1},  M_t = I - A_t H
//   rr_t = ||y - H x_{t-1}||^2,  e_t = max(rr_t - Nr sigma2, 0)
//   c_t = ratio_m_t e_t + ratio_a_t sigma2,  ratio_m_t = ||M_t||^2 / ||H||^2,  ratio_a_t = ||A_t||^2
//   v_t[i] = theta2_t[i] c_t / Nt
//   x_t = posterior mean of each real axis of z_t under variance v_t
// Backward (complex gradients written dL/dRe + i dL/dIm, so dL/dW = g_z x^H for z = W x):
//   g_z = g_x * du, g_v = sum over both axes of g_x * dv (du, dv from the tape)
//   g_theta2_t[i] += g_v[i] c_t / Nt,  g_c = sum_i g_v[i] theta2_t[i] / Nt
//   g_ratio_m_t += g_c e_t,  g_ratio_a_t += g_c sigma2,  g_e = g_c ratio_m_t [e_t > 0]
//   g_x_{t-1} = M_t^H g_z + 2 g_e (H^H H x_{t-1} - H^H y)
//   g_M_t = sum_b g_z x_{t-1}^H + 2 g_ratio_m_t M_t / ||H||^2
//   g_A_t = sum_b g_z y^H - g_M_t H^H + 2 g_ratio_a_t A_t

// Tape, per layer t, group g and tile of kLanes vectors, in tile layout: du re/im rows, dv re/im
// rows ([Nt][kLanes] each) and the excess e of each lane. Opaque to callers (only its size is public).
struct TapeLayout {
  int64_t tiles, block;
  explicit TapeLayout(const MMNetShape& s)
      : tiles((s.batch + kLanes - 1) / kLanes), block((4 * s.n_tx + 1) * kLanes) {}
  int64_t at(const MMNetShape& s, int64_t t, int64_t g, int64_t tile) const {
    return ((t * s.groups + g) * tiles + tile) * block;
  }
  static int64_t size(const MMNetShape& s) { return s.layers * s.groups * TapeLayout(s).tiles * TapeLayout(s).block; }
};

// Posterior mean of one real axis and its derivatives du = d mean/du = 2 Var_w(a) / v and
// dv = d mean/dv = Cov_w(a, (u - a)^2) / v^2, both centred (no cancellation for confident
// posteriors); dv = 0 below the variance floor, where v is clamped. V is float or v8f.
template <int K, typename V>
inline void posterior_with_grads(const Constellation& c, V u, V v, V& mean, V& du,
                                                                V& dv) {
  const V floor = V{} + kMinVariance;
  const V vc = v < floor ? floor : v;
  const V inv = 1.0f / vc;
  V d2[K], w[K];
  V top = V{} - std::numeric_limits<float>::infinity();
  for (int k = 0; k < K; ++k) {
    const V d = u - c.levels[k];
    d2[k] = d * d;
    w[k] = -d2[k] * inv;
    top = w[k] > top ? w[k] : top;
  }
  V sum = V{};
  for (int k = 0; k < K; ++k) {
    w[k] = exp_nonpositive(w[k] - top);
    sum += w[k];
  }
  const V inv_sum = 1.0f / sum;
  V m = V{}, mean_d2 = V{};
  for (int k = 0; k < K; ++k) {
    w[k] *= inv_sum;
    m += w[k] * c.levels[k];
    mean_d2 += w[k] * d2[k];
  }
  V var = V{}, cov = V{};
  for (int k = 0; k < K; ++k) {
    const V centred = c.levels[k] - m;
    const V wc = w[k] * centred;
    var += wc * centred;
    cov += wc * (d2[k] - mean_d2);
  }
  mean = m;
  du = 2.0f * var * inv;
  dv = v >= floor ? cov * inv * inv : V{};
}

template <int K>
void posterior_with_grads_k(const Constellation& c, const float* u, const float* v, int64_t n, float* mean,
                            float* du, float* dv) {
  int64_t s = 0;
#if defined(__GNUC__)
  for (; s + 8 <= n; s += 8) {
    v8f m, a, b;
    posterior_with_grads<K>(c, load8(u + s), load8(v + s), m, a, b);
    store8(mean + s, m), store8(du + s, a), store8(dv + s, b);
  }
#endif
  for (; s < n; ++s) posterior_with_grads<K>(c, u[s], v[s], mean[s], du[s], dv[s]);
}

EDGERT_KERNEL_CLONES void posterior_with_grads_any(const Constellation& c, const float* u, const float* v, int64_t n,
                                                  float* mean, float* du, float* dv) {
  switch (c.k) {
    case 2: posterior_with_grads_k<2>(c, u, v, n, mean, du, dv); break;
    case 4: posterior_with_grads_k<4>(c, u, v, n, mean, du, dv); break;
    default: posterior_with_grads_k<8>(c, u, v, n, mean, du, dv); break;
  }
}

// A tile of kLanes vectors in split layout: [re rows][kLanes] then [im rows][kLanes].
struct SplitTile {
  std::vector<float> data;
  int64_t rows = 0;
  SplitTile(int64_t n_rows) : data(2 * n_rows * kLanes, 0.0f), rows(n_rows) {}
  float* re() { return data.data(); }
  float* im() { return data.data() + rows * kLanes; }
  const float* re() const { return data.data(); }
  const float* im() const { return data.data() + rows * kLanes; }
};

// Loads lanes [0, lanes) of the tile starting at vector b0 from a [B][2][Nt] real-stacked array
// (xs, grad_xs of one layer and group); other lanes are zero.
void load_stacked(const float* src, int64_t nt, int64_t lanes, float* re, float* im) {
  for (int64_t i = 0; i < nt; ++i) {
    for (int64_t l = 0; l < kLanes; ++l) {
      re[i * kLanes + l] = l < lanes ? src[l * 2 * nt + i] : 0.0f;
      im[i * kLanes + l] = l < lanes ? src[l * 2 * nt + nt + i] : 0.0f;
    }
  }
}

void load_y_tile(const cfloat* y, int64_t nr, int64_t lanes, float* re, float* im, double* yy) {
  for (int64_t l = 0; l < kLanes; ++l) yy[l] = 0.0;
  for (int64_t j = 0; j < nr; ++j) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const cfloat v = l < lanes ? y[l * nr + j] : cfloat(0.0f, 0.0f);
      re[j * kLanes + l] = v.real();
      im[j * kLanes + l] = v.imag();
      yy[l] += std::norm(std::complex<double>(v));
    }
  }
}

EDGERT_KERNEL_CLONES void train_forward_tile(const MMNetShape& s, const GroupPrep& p, const Constellation& c,
                                            const cfloat* y, const float* sigma2, int64_t lanes, const float* theta2,
                                            int64_t g, int64_t b0, float* xs, float* tape, const float* target,
                                            double* squared_error, TileScratch& w) {
  const int64_t nr = s.n_rx, nt = s.n_tx, T = s.layers, n_sym = nt * kLanes;
  const TapeLayout tl(s);
  // target != null: the tile's sum over layers, lanes and axes of (x_t - target)^2 goes to *squared_error
  std::vector<float> target_re, target_im;
  double tile_error = 0;
  if (target != nullptr) {
    target_re.resize(n_sym), target_im.resize(n_sym);
    load_stacked(target + (g * s.batch + b0) * 2 * nt, nt, lanes, target_re.data(), target_im.data());
  }
  double yy[kLanes];
  load_y_tile(y, nr, lanes, w.y_re.data(), w.y_im.data(), yy);
  float s2[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) s2[l] = l < lanes ? sigma2[l] : 0.0f;
  tile_product<false>(p.hh.data(), nr, nt, w.y_re.data(), w.y_im.data(), kLanes, w.hy_re.data(), w.hy_im.data(),
                      kLanes);
  std::fill(w.x_re.begin(), w.x_re.end(), 0.0f);
  std::fill(w.x_im.begin(), w.x_im.end(), 0.0f);
  std::vector<float> v(n_sym);
  for (int64_t t = 0; t < T; ++t) {
    tile_product<false>(p.a.data() + t * packed_size(nt, nr), nr, nt, w.y_re.data(), w.y_im.data(), kLanes,
                        w.z_re.data(), w.z_im.data(), kLanes);
    double residual[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) residual[l] = yy[l];
    if (t > 0) {
      tile_product<true>(p.m.data() + t * packed_size(nt, nt), nt, nt, w.x_re.data(), w.x_im.data(), kLanes,
                         w.z_re.data(), w.z_im.data(), kLanes);
      tile_product<false>(p.gram.data(), nt, nt, w.x_re.data(), w.x_im.data(), kLanes, w.u_re.data(), w.u_im.data(),
                          kLanes);
      accumulate_residual(nt, w.x_re.data(), w.x_im.data(), w.u_re.data(), w.u_im.data(), w.hy_re.data(),
                          w.hy_im.data(), residual);
    }
    float excess[kLanes], common[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      excess[l] = static_cast<float>(std::max(residual[l] - static_cast<double>(nr) * s2[l], 0.0));
      common[l] = (p.ratio_m[t] * excess[l] + p.ratio_a[t] * s2[l]) / static_cast<float>(nt);
    }
    const float* th2 = theta2 + (t * s.groups + g) * nt;
    for (int64_t i = 0; i < nt; ++i) {
      for (int64_t l = 0; l < kLanes; ++l) v[i * kLanes + l] = th2[i] * common[l];
    }
    float* rec = tape + tl.at(s, t, g, b0 / kLanes);
    float *du_re = rec, *du_im = rec + n_sym, *dv_re = rec + 2 * n_sym, *dv_im = rec + 3 * n_sym;
    posterior_with_grads_any(c, w.z_re.data(), v.data(), n_sym, w.x_re.data(), du_re, dv_re);
    posterior_with_grads_any(c, w.z_im.data(), v.data(), n_sym, w.x_im.data(), du_im, dv_im);
    std::copy(excess, excess + kLanes, rec + 4 * n_sym);
    if (target != nullptr) {
      // padded lanes are left out: x there is the posterior mean at z = 0 (zero only up to rounding)
      for (int64_t i = 0; i < nt; ++i) {
        float row = 0;
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t e = i * kLanes + l;
          const float dr = w.x_re[e] - target_re[e], di = w.x_im[e] - target_im[e];
          row += l < lanes ? dr * dr + di * di : 0.0f;
        }
        tile_error += row;
      }
    }
    float* x_dst = xs + ((t * s.groups + g) * s.batch + b0) * 2 * nt;
    for (int64_t l = 0; l < lanes; ++l) {
      for (int64_t i = 0; i < nt; ++i) {
        x_dst[l * 2 * nt + i] = w.x_re[i * kLanes + l];
        x_dst[l * 2 * nt + nt + i] = w.x_im[i * kLanes + l];
      }
    }
  }
  if (squared_error != nullptr) *squared_error = tile_error;
}

// A run of split tiles: tile k's real rows start at data + k * stride, its imaginary rows at
// im_offset floats after them.
struct TileRun {
  const float* data;
  int64_t rows, im_offset, stride;
};

// out[i][j] += sum_b a[i][b] conj(m[b][j]) for i < a.rows, j < cols: a batch-wide product with the batch as
// the inner dimension. a: split tiles (rows padded to kRows, zero beyond a.rows); m: split row-major
// [tiles * kLanes][ldm], columns zero-padded to a multiple of kLanes. The register block is kRows rows of a
// by 8 columns of m (eight vector accumulators), as in tile_product: each vector b costs two loads of m,
// 2 kRows broadcasts and 4 kRows FMAs.
EDGERT_KERNEL_CLONES void batch_outer_sum(const TileRun& a, const float* m_re, const float* m_im, int64_t ldm,
                                         int64_t cols, int64_t tiles, float* out_re, float* out_im) {
  for (int64_t i0 = 0; i0 < a.rows; i0 += kRows) {
    for (int64_t j0 = 0; j0 < cols; j0 += kLanes) {
#if defined(__GNUC__)
      v8f r0 = {}, r1 = {}, r2 = {}, r3 = {}, c0 = {}, c1 = {}, c2 = {}, c3 = {};
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const float* pa = a.data + tile * a.stride + i0 * kLanes;
        for (int64_t l = 0; l < kLanes; ++l, ++pa) {
          const int64_t b = tile * kLanes + l;
          const v8f mr = load8(m_re + b * ldm + j0), mi = load8(m_im + b * ldm + j0);
          const float* pc = pa + a.im_offset;
          // (a + i c) conj(mr + i mi) = (a mr + c mi) + i (c mr - a mi)
          r0 += pa[0] * mr, r0 += pc[0] * mi, c0 += pc[0] * mr, c0 -= pa[0] * mi;
          r1 += pa[8] * mr, r1 += pc[8] * mi, c1 += pc[8] * mr, c1 -= pa[8] * mi;
          r2 += pa[16] * mr, r2 += pc[16] * mi, c2 += pc[16] * mr, c2 -= pa[16] * mi;
          r3 += pa[24] * mr, r3 += pc[24] * mi, c3 += pc[24] * mr, c3 -= pa[24] * mi;
        }
      }
      const v8f acc_re[kRows] = {r0, r1, r2, r3}, acc_im[kRows] = {c0, c1, c2, c3};
      for (int64_t q = 0; q < kRows && i0 + q < a.rows; ++q) {
        for (int64_t lane = 0; lane < kLanes && j0 + lane < cols; ++lane) {
          out_re[(i0 + q) * cols + j0 + lane] += acc_re[q][lane];
          out_im[(i0 + q) * cols + j0 + lane] += acc_im[q][lane];
        }
      }
#else
      for (int64_t q = 0; q < kRows && i0 + q < a.rows; ++q) {
        for (int64_t lane = 0; lane < kLanes && j0 + lane < cols; ++lane) {
          float sum_re = 0, sum_im = 0;
          for (int64_t tile = 0; tile < tiles; ++tile) {
            for (int64_t l = 0; l < kLanes; ++l) {
              const float ar = a.data[tile * a.stride + (i0 + q) * kLanes + l];
              const float ai = a.data[tile * a.stride + a.im_offset + (i0 + q) * kLanes + l];
              const int64_t e = (tile * kLanes + l) * ldm + j0 + lane;
              sum_re += ar * m_re[e] + ai * m_im[e];
              sum_im += ai * m_re[e] - ar * m_im[e];
            }
          }
          out_re[(i0 + q) * cols + j0 + lane] += sum_re;
          out_im[(i0 + q) * cols + j0 + lane] += sum_im;
        }
      }
#endif
    }
  }
}

// Gradient sums of one run of consecutive tiles of one group (reduced over runs afterwards).
struct TrainPartial {
  std::vector<float> gzy_re, gzy_im;  // [T][Nt][Nr]  sum_b g_z y^H
  std::vector<float> gzx_re, gzx_im;  // [T][Nt][Nt]  sum_b g_z x_{t-1}^H
  std::vector<double> g_ratio_m, g_ratio_a, g_theta2;  // [T], [T], [T][Nt]
  TrainPartial(const MMNetShape& s)
      : gzy_re(s.layers * s.n_tx * s.n_rx, 0.0f), gzy_im(gzy_re.size(), 0.0f),
        gzx_re(s.layers * s.n_tx * s.n_tx, 0.0f), gzx_im(gzx_re.size(), 0.0f), g_ratio_m(s.layers, 0.0),
        g_ratio_a(s.layers, 0.0), g_theta2(s.layers * s.n_tx, 0.0) {}
};

// complex value (i, j) of a matrix packed by pack_rows
inline cfloat packed_at(const float* packed, int64_t n_in, int64_t i, int64_t j) {
  const float* d = packed + ((i / kRows) * n_in + j) * 2 * kRows;
  return cfloat(d[i % kRows], d[kRows + i % kRows]);
}

// Where dL/dxs comes from: an array [T, G, B, 2, Nt], or the MSE loss's own derivative
// dL/dx_t = mse_scale[g] (x_t - target) (mse_scale = 2 dL/dL_g / (T B)), formed per tile.
struct XsGrad {
  const float* grad_xs = nullptr;
  const float* target = nullptr;
  const double* mse_scale = nullptr;
};

EDGERT_KERNEL_CLONES void train_backward_tiles(const MMNetShape& s, const GroupPrep& p, const float* m_herm,
                                              const cfloat* y, const float* sigma2, const float* theta2,
                                              const float* xs, const float* tape, const XsGrad& source, int64_t g,
                                              int64_t tile_begin, int64_t tile_end, TrainPartial& out) {
  const int64_t nr = s.n_rx, nt = s.n_tx, T = s.layers, rows = padded_rows(nt), tiles = tile_end - tile_begin;
  const TapeLayout tl(s);
  const int64_t y_stride = 2 * nr * kLanes, x_stride = 2 * nt * kLanes, z_stride = 2 * rows * kLanes;
  std::vector<float> y_tiles(tiles * y_stride), hy_tiles(tiles * z_stride), gx_tiles(tiles * x_stride, 0.0f),
      gz_tiles(tiles * z_stride, 0.0f), xprev_tiles(tiles * x_stride, 0.0f);
  // y and x_{t-1} with the batch as rows (split, columns padded to kLanes) for batch_outer_sum
  const int64_t ldy = (nr + kLanes - 1) / kLanes * kLanes, ldx = (nt + kLanes - 1) / kLanes * kLanes;
  std::vector<float> yb_re(tiles * kLanes * ldy, 0.0f), yb_im(yb_re.size(), 0.0f), xb_re(tiles * kLanes * ldx, 0.0f),
      xb_im(xb_re.size(), 0.0f);
  std::vector<float> gx_in_re(nt * kLanes), gx_in_im(nt * kLanes), u_re(rows * kLanes), u_im(rows * kLanes),
      gx_new_re(rows * kLanes), gx_new_im(rows * kLanes);
  std::vector<float> target_tiles(source.target != nullptr ? tiles * x_stride : 0);
  const float mse_scale = source.target != nullptr ? static_cast<float>(source.mse_scale[g]) : 0.0f;
  for (int64_t k = 0; k < tiles; ++k) {
    const int64_t b0 = (tile_begin + k) * kLanes, lanes = std::min(kLanes, s.batch - b0);
    if (source.target != nullptr) {
      float* tg = target_tiles.data() + k * x_stride;
      load_stacked(source.target + (g * s.batch + b0) * 2 * nt, nt, lanes, tg, tg + nt * kLanes);
    }
    double yy[kLanes];
    float* yt = y_tiles.data() + k * y_stride;
    load_y_tile(y + (g * s.batch + b0) * nr, nr, lanes, yt, yt + nr * kLanes, yy);
    for (int64_t j = 0; j < nr; ++j) {
      for (int64_t l = 0; l < kLanes; ++l) {
        yb_re[(k * kLanes + l) * ldy + j] = yt[j * kLanes + l];
        yb_im[(k * kLanes + l) * ldy + j] = yt[(nr + j) * kLanes + l];
      }
    }
    float* hy = hy_tiles.data() + k * z_stride;
    tile_product<false>(p.hh.data(), nr, nt, yt, yt + nr * kLanes, kLanes, hy, hy + rows * kLanes, kLanes);
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* th2 = theta2 + (t * s.groups + g) * nt;
    for (int64_t k = 0; k < tiles; ++k) {
      const int64_t b0 = (tile_begin + k) * kLanes, lanes = std::min(kLanes, s.batch - b0);
      float* gx_re = gx_tiles.data() + k * x_stride;
      float* gx_im = gx_re + nt * kLanes;
      float* xp_re = xprev_tiles.data() + k * x_stride;
      float* xp_im = xp_re + nt * kLanes;
      if (source.target == nullptr) {
        load_stacked(source.grad_xs + ((t * s.groups + g) * s.batch + b0) * 2 * nt, nt, lanes, gx_in_re.data(),
                     gx_in_im.data());
      } else {
        // x_t is in xprev_tiles since layer t + 1 (which loaded its x_{t-1}); the last layer loads it.
        // Padded lanes are zero in both x_t and the target, so their gradient is zero.
        if (t == T - 1) load_stacked(xs + ((t * s.groups + g) * s.batch + b0) * 2 * nt, nt, lanes, xp_re, xp_im);
        const float* tg = target_tiles.data() + k * x_stride;
        for (int64_t e = 0; e < nt * kLanes; ++e) {
          gx_in_re[e] = mse_scale * (xp_re[e] - tg[e]);
          gx_in_im[e] = mse_scale * (xp_im[e] - tg[nt * kLanes + e]);
        }
      }
      float* gz_re = gz_tiles.data() + k * z_stride;
      float* gz_im = gz_re + rows * kLanes;
      const float* rec = tape + tl.at(s, t, g, tile_begin + k);
      const int64_t n_sym = nt * kLanes;
      const float *du_re = rec, *du_im = rec + n_sym, *dv_re = rec + 2 * n_sym, *dv_im = rec + 3 * n_sym;
      const float* excess = rec + 4 * n_sym;
      float s2[kLanes], g_common[kLanes] = {}, common[kLanes];
      for (int64_t l = 0; l < kLanes; ++l) {
        s2[l] = l < lanes ? sigma2[g * s.batch + b0 + l] : 0.0f;
        common[l] = (p.ratio_m[t] * excess[l] + p.ratio_a[t] * s2[l]) / static_cast<float>(nt);
      }
      // Padded lanes carry zero gradients (grad_xs is zero there), so they add nothing below.
      for (int64_t i = 0; i < nt; ++i) {
        float g_th = 0;
        const float th = th2[i] / static_cast<float>(nt);
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t e = i * kLanes + l;
          const float gr = gx_re[e] + gx_in_re[e], gi = gx_im[e] + gx_in_im[e];
          gz_re[e] = gr * du_re[e];
          gz_im[e] = gi * du_im[e];
          const float g_v = gr * dv_re[e] + gi * dv_im[e];
          g_th += g_v * common[l];
          g_common[l] += g_v * th;
        }
        out.g_theta2[t * nt + i] += g_th;
      }
      float g_excess[kLanes];
      for (int64_t l = 0; l < kLanes; ++l) {
        out.g_ratio_m[t] += double(g_common[l]) * excess[l];
        out.g_ratio_a[t] += double(g_common[l]) * s2[l];
        g_excess[l] = excess[l] > 0.0f ? g_common[l] * p.ratio_m[t] : 0.0f;
      }
      if (t == 0) continue;
      // g_x_{t-1} = M_t^H g_z + 2 g_e (H^H H x_{t-1} - H^H y)
      load_stacked(xs + (((t - 1) * s.groups + g) * s.batch + b0) * 2 * nt, nt, lanes, xp_re, xp_im);
      for (int64_t i = 0; i < nt; ++i) {
        for (int64_t l = 0; l < kLanes; ++l) {
          xb_re[(k * kLanes + l) * ldx + i] = xp_re[i * kLanes + l];
          xb_im[(k * kLanes + l) * ldx + i] = xp_im[i * kLanes + l];
        }
      }
      tile_product<false>(m_herm + t * packed_size(nt, nt), nt, nt, gz_re, gz_im, kLanes, gx_new_re.data(),
                          gx_new_im.data(), kLanes);
      tile_product<false>(p.gram.data(), nt, nt, xp_re, xp_im, kLanes, u_re.data(), u_im.data(), kLanes);
      const float* hy_re = hy_tiles.data() + k * z_stride;
      const float* hy_im = hy_re + rows * kLanes;
      for (int64_t i = 0; i < nt; ++i) {
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t e = i * kLanes + l;
          gx_re[e] = gx_new_re[e] + 2.0f * g_excess[l] * (u_re[e] - hy_re[e]);
          gx_im[e] = gx_new_im[e] + 2.0f * g_excess[l] * (u_im[e] - hy_im[e]);
        }
      }
    }
    const TileRun gz{gz_tiles.data(), nt, rows * kLanes, z_stride};
    batch_outer_sum(gz, yb_re.data(), yb_im.data(), ldy, nr, tiles, out.gzy_re.data() + t * nt * nr,
                    out.gzy_im.data() + t * nt * nr);
    if (t > 0) {
      batch_outer_sum(gz, xb_re.data(), xb_im.data(), ldx, nt, tiles, out.gzx_re.data() + t * nt * nt,
                      out.gzx_im.data() + t * nt * nt);
    }
  }
}

// dL/dA and dL/dtheta2 of group g from its runs' partial sums:
//   g_M = sum_b g_z x^H + 2 g_ratio_m M / ||H||^2,  g_A = sum_b g_z y^H - g_M H^H + 2 g_ratio_a A.
// Split re/im rows with the Nr columns innermost, so the g_M H^H loop vectorises.
EDGERT_KERNEL_CLONES void assemble_group_grads(const MMNetShape& s, const GroupPrep& p, const cfloat* H, const cfloat* A,
                                              const TrainPartial* parts, int64_t runs, int64_t g, cfloat* grad_A,
                                              float* grad_theta2) {
  const int64_t nr = s.n_rx, nt = s.n_tx, T = s.layers;
  const cfloat* h = H + g * nr * nt;
  double h_norm = 0;
  std::vector<float> hh_re(nt * nr), hh_im(nt * nr);  // H^H [Nt][Nr]
  for (int64_t j = 0; j < nr; ++j) {
    for (int64_t k = 0; k < nt; ++k) {
      const cfloat v = h[j * nt + k];
      hh_re[k * nr + j] = v.real();
      hh_im[k * nr + j] = -v.imag();
      h_norm += std::norm(std::complex<double>(v));
    }
  }
  std::vector<float> ga_re(nt * nr), ga_im(nt * nr), gm_re(nt * nt), gm_im(nt * nt);
  for (int64_t t = 0; t < T; ++t) {
    double g_rm = 0, g_ra = 0;
    for (int64_t run = 0; run < runs; ++run) g_rm += parts[run].g_ratio_m[t], g_ra += parts[run].g_ratio_a[t];
    for (int64_t i = 0; i < nt; ++i) {
      double g_th = 0;
      for (int64_t run = 0; run < runs; ++run) g_th += parts[run].g_theta2[t * nt + i];
      grad_theta2[(t * s.groups + g) * nt + i] = static_cast<float>(g_th);
    }
    const float m_scale = h_norm > 0 ? static_cast<float>(2.0 * g_rm / h_norm) : 0.0f;
    const float* m = p.m.data() + t * packed_size(nt, nt);
    for (int64_t i = 0; i < nt; ++i) {
      for (int64_t k = 0; k < nt; ++k) {
        const cfloat v = packed_at(m, nt, i, k);
        gm_re[i * nt + k] = m_scale * v.real();
        gm_im[i * nt + k] = m_scale * v.imag();
      }
    }
    const cfloat* a = A + (t * s.groups + g) * nt * nr;
    const float a_scale = static_cast<float>(2.0 * g_ra);
    for (int64_t e = 0; e < nt * nr; ++e) ga_re[e] = a_scale * a[e].real(), ga_im[e] = a_scale * a[e].imag();
    for (int64_t run = 0; run < runs; ++run) {
      const TrainPartial& part = parts[run];
      for (int64_t e = 0; e < nt * nt; ++e) {
        gm_re[e] += part.gzx_re[t * nt * nt + e];
        gm_im[e] += part.gzx_im[t * nt * nt + e];
      }
      for (int64_t e = 0; e < nt * nr; ++e) {
        ga_re[e] += part.gzy_re[t * nt * nr + e];
        ga_im[e] += part.gzy_im[t * nt * nr + e];
      }
    }
    for (int64_t i = 0; i < nt; ++i) {
      float* out_re = ga_re.data() + i * nr;
      float* out_im = ga_im.data() + i * nr;
      for (int64_t k = 0; k < nt; ++k) {
        const float gr = gm_re[i * nt + k], gi = gm_im[i * nt + k];
        const float* br = hh_re.data() + k * nr;
        const float* bi = hh_im.data() + k * nr;
        for (int64_t j = 0; j < nr; ++j) {
          out_re[j] -= gr * br[j];
          out_re[j] += gi * bi[j];
          out_im[j] -= gr * bi[j];
          out_im[j] -= gi * br[j];
        }
      }
    }
    cfloat* ga = grad_A + (t * s.groups + g) * nt * nr;
    for (int64_t e = 0; e < nt * nr; ++e) ga[e] = cfloat(ga_re[e], ga_im[e]);
  }
}

}  // namespace

int64_t mmnet_tape_size(const MMNetShape& s) { return TapeLayout::size(s); }

namespace {

edgert_status check_train_args(const char* where, const MMNetShape& s, const void* H, const void* y,
                               const float* sigma2, const void* A, const float* theta2) {
  if (make_constellation(s.modulation).k == 0) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: modulation must be 4, 16 or 64, got %d", where, s.modulation);
  }
  if (s.layers <= 0 || s.groups < 0 || s.batch < 0 || s.n_rx <= 0 || s.n_tx <= 0) {
    return fail(EDGERT_ERR_SHAPE, "%s: bad shape T=%lld G=%lld B=%lld Nr=%lld Nt=%lld (need T, Nr, Nt >= 1, G, B >= 0)",
                where, (long long)s.layers, (long long)s.groups, (long long)s.batch, (long long)s.n_rx,
                (long long)s.n_tx);
  }
  if (s.groups == 0 || s.batch == 0) return EDGERT_OK;
  if (H == nullptr || y == nullptr || sigma2 == nullptr || A == nullptr || theta2 == nullptr) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: null buffer", where);
  }
  for (int64_t e = 0; e < s.groups * s.batch; ++e) {
    if (!finite_nonneg(sigma2[e])) {
      return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: sigma2[%lld] = %g (need finite >= 0)", where, (long long)e,
                  sigma2[e]);
    }
  }
  return EDGERT_OK;
}

// Runs of consecutive tiles for the work items: whole groups when there are enough for the
// threads, else each group's tiles split in up to 2 x threads runs.
int64_t runs_per_group(const MMNetShape& s, int64_t tiles_per_group) {
  const int64_t want = (2 * detail::max_threads() + s.groups - 1) / std::max<int64_t>(s.groups, 1);
  return std::max<int64_t>(1, std::min(want, tiles_per_group));
}

// target, loss: null for mmnet_train_forward; for mmnet_train_mse_forward, loss[g] = the group's mean
// over layers and vectors of ||x_t - target||^2 (the caller rejects an empty batch).
edgert_status train_forward(const char* where, const MMNetShape& s, const cfloat* H, const cfloat* y,
                            const float* sigma2, const cfloat* A, const float* theta2, float* xs, float* tape,
                            const float* target, float* loss) {
  if (edgert_status st = check_train_args(where, s, H, y, sigma2, A, theta2); st != EDGERT_OK) return st;
  if (loss != nullptr) std::fill(loss, loss + s.groups, 0.0f);
  if (s.groups == 0 || s.batch == 0) return EDGERT_OK;
  if (xs == nullptr || tape == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: null buffer", where);
  const Constellation c = make_constellation(s.modulation);
  const int64_t tiles_per_group = (s.batch + kLanes - 1) / kLanes;
  std::vector<GroupPrep> prep(static_cast<size_t>(s.groups));
  detail::parallel_for(s.groups, 1, [&](int64_t begin, int64_t end) {
    const detail::FlushDenormals flush;
    for (int64_t g = begin; g < end; ++g) prepare_group(s, H, A, nullptr, g, prep[static_cast<size_t>(g)]);
  });
  // per tile, summed in tile order afterwards: the loss does not depend on the thread count
  std::vector<double> tile_error(target != nullptr ? static_cast<size_t>(s.groups * tiles_per_group) : 0);
  detail::parallel_for(s.groups * tiles_per_group, 1, [&](int64_t begin, int64_t end) {
    const detail::FlushDenormals flush;
    TileScratch scratch(s.n_rx, s.n_tx);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / tiles_per_group, b0 = (item % tiles_per_group) * kLanes;
      train_forward_tile(s, prep[static_cast<size_t>(g)], c, y + (g * s.batch + b0) * s.n_rx,
                         sigma2 + g * s.batch + b0, std::min(kLanes, s.batch - b0), theta2, g, b0, xs, tape, target,
                         target != nullptr ? &tile_error[static_cast<size_t>(item)] : nullptr, scratch);
    }
  });
  if (target != nullptr) {
    for (int64_t g = 0; g < s.groups; ++g) {
      double sum = 0;
      for (int64_t k = 0; k < tiles_per_group; ++k) sum += tile_error[static_cast<size_t>(g * tiles_per_group + k)];
      loss[g] = static_cast<float>(sum / (static_cast<double>(s.layers) * static_cast<double>(s.batch)));
    }
  }
  return EDGERT_OK;
}

edgert_status train_backward(const char* where, const MMNetShape& s, const cfloat* H, const cfloat* y,
                             const float* sigma2, const cfloat* A, const float* theta2, const float* xs,
                             const float* tape, const XsGrad& source, cfloat* grad_A, float* grad_theta2) {
  if (edgert_status st = check_train_args(where, s, H, y, sigma2, A, theta2); st != EDGERT_OK) return st;
  const int64_t nt = s.n_tx, T = s.layers;
  if (s.groups == 0) return EDGERT_OK;
  if (grad_A == nullptr || grad_theta2 == nullptr) return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: null buffer", where);
  if (s.batch > 0 && (xs == nullptr || tape == nullptr ||
                      (source.grad_xs == nullptr && (source.target == nullptr || source.mse_scale == nullptr)))) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: null buffer", where);
  }
  const int64_t tiles_per_group = (s.batch + kLanes - 1) / kLanes;
  const int64_t runs = s.batch > 0 ? runs_per_group(s, tiles_per_group) : 0;
  const int64_t tiles_per_run = runs > 0 ? (tiles_per_group + runs - 1) / runs : 0;
  std::vector<GroupPrep> prep(static_cast<size_t>(s.groups));
  std::vector<std::vector<float>> m_herm(static_cast<size_t>(s.groups));
  detail::parallel_for(s.groups, 1, [&](int64_t begin, int64_t end) {
    const detail::FlushDenormals flush;
    for (int64_t g = begin; g < end; ++g) {
      GroupPrep& p = prep[static_cast<size_t>(g)];
      prepare_group(s, H, A, nullptr, g, p);
      std::vector<float>& mh = m_herm[static_cast<size_t>(g)];
      mh.resize(T * packed_size(nt, nt));
      for (int64_t t = 0; t < T; ++t) {
        const float* m = p.m.data() + t * packed_size(nt, nt);
        pack_rows(nt, nt, [&](int64_t i, int64_t k) { return std::conj(packed_at(m, nt, k, i)); },
                  mh.data() + t * packed_size(nt, nt));
      }
    }
  });
  std::vector<TrainPartial> partials;
  partials.reserve(static_cast<size_t>(s.groups * runs));
  for (int64_t item = 0; item < s.groups * runs; ++item) partials.emplace_back(s);
  detail::parallel_for(s.groups * runs, 1, [&](int64_t begin, int64_t end) {
    const detail::FlushDenormals flush;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / runs, run = item % runs;
      const int64_t tb = run * tiles_per_run, te = std::min(tiles_per_group, tb + tiles_per_run);
      if (tb < te) {
        train_backward_tiles(s, prep[static_cast<size_t>(g)], m_herm[static_cast<size_t>(g)].data(), y, sigma2,
                             theta2, xs, tape, source, g, tb, te, partials[static_cast<size_t>(item)]);
      }
    }
  });
  detail::parallel_for(s.groups, 1, [&](int64_t begin, int64_t end) {
    const detail::FlushDenormals flush;
    for (int64_t g = begin; g < end; ++g) {
      assemble_group_grads(s, prep[static_cast<size_t>(g)], H, A, partials.data() + g * runs, runs, g, grad_A,
                           grad_theta2);
    }
  });
  return EDGERT_OK;
}

}  // namespace

edgert_status mmnet_train_forward(const MMNetShape& s, const cfloat* H, const cfloat* y, const float* sigma2,
                                  const cfloat* A, const float* theta2, float* xs, float* tape) {
  return train_forward("mmnet_train_forward", s, H, y, sigma2, A, theta2, xs, tape, nullptr, nullptr);
}

edgert_status mmnet_train_backward(const MMNetShape& s, const cfloat* H, const cfloat* y, const float* sigma2,
                                   const cfloat* A, const float* theta2, const float* xs, const float* tape,
                                   const float* grad_xs, cfloat* grad_A, float* grad_theta2) {
  XsGrad source;
  source.grad_xs = grad_xs;
  return train_backward("mmnet_train_backward", s, H, y, sigma2, A, theta2, xs, tape, source, grad_A, grad_theta2);
}

edgert_status mmnet_train_mse_forward(const MMNetShape& s, const cfloat* H, const cfloat* y, const float* sigma2,
                                      const cfloat* A, const float* theta2, const float* target, float* xs,
                                      float* tape, float* loss) {
  if (s.groups > 0 && s.batch == 0) {
    return fail(EDGERT_ERR_SHAPE, "mmnet_train_mse_forward: B = 0 (the loss is a mean over the batch's vectors)");
  }
  if (s.groups > 0 && (loss == nullptr || target == nullptr)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_train_mse_forward: null buffer");
  }
  return train_forward("mmnet_train_mse_forward", s, H, y, sigma2, A, theta2, xs, tape, target, loss);
}

edgert_status mmnet_train_mse_backward(const MMNetShape& s, const cfloat* H, const cfloat* y, const float* sigma2,
                                       const cfloat* A, const float* theta2, const float* xs, const float* tape,
                                       const float* target, const float* grad_loss, cfloat* grad_A,
                                       float* grad_theta2) {
  if (s.groups > 0 && s.batch == 0) {
    return fail(EDGERT_ERR_SHAPE, "mmnet_train_mse_backward: B = 0 (the loss is a mean over the batch's vectors)");
  }
  if (s.groups > 0 && (target == nullptr || grad_loss == nullptr)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "mmnet_train_mse_backward: null buffer");
  }
  std::vector<double> scale(static_cast<size_t>(std::max<int64_t>(s.groups, 0)));
  const double per_term = s.layers > 0 ? 2.0 / (double(s.layers) * double(s.batch)) : 0.0;
  for (size_t g = 0; g < scale.size(); ++g) scale[g] = per_term * grad_loss[g];
  XsGrad source;
  source.target = target;
  source.mse_scale = scale.data();
  return train_backward("mmnet_train_mse_backward", s, H, y, sigma2, A, theta2, xs, tape, source, grad_A,
                        grad_theta2);
}

namespace {
