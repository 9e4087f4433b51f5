// kernels.hpp — the hot-path kernels of libedgert on raw pointers.
//
// Every function validates its shapes and arguments, returns an edgert_status
// and sets the thread-local error message on failure (edgert_last_error()).
// Buffers are caller-owned, contiguous, row-major. Output buffers are written
// only after all inputs have been validated.
//
// The CPU functions live in namespace edgert::cpu; the CUDA ones (compiled
// only when the library is built with CUDA) in edgert::cuda, take device
// pointers and a cudaStream_t passed as void*, and are asynchronous unless
// stated otherwise. Both sets are the entries of the backend registry behind
// the C API's edgert_sparse_patch_on, edgert_adaptive_conv, ... , which choose
// between them per call (EDGERT_BACKEND_AUTO); call these directly only when
// the backend is fixed at compile time.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>

#include "edgert/edgert.h"

namespace edgert {

using cfloat = std::complex<float>;

// ---- MMNet detection and the complex Gaussian denoiser ------------------
//
// Model: y = H x + n, x uniform over a square QAM constellation normalised to
// unit average energy, n ~ CN(0, sigma2 I). Complex numbers are interleaved.

struct MMNetShape {
  int64_t layers = 0;    // T
  int64_t groups = 0;    // G: channels, each shared by `batch` received vectors
  int64_t batch = 0;     // B
  int64_t n_rx = 0;      // Nr
  int64_t n_tx = 0;      // Nt
  int32_t modulation = 16;  // QAM order M: 4, 16 or 64
};

// Levels of one real axis of unit-energy square M-QAM, ascending:
// (2k - sqrt(M) + 1) * sqrt(3 / (2 (M - 1))), k = 0 .. sqrt(M)-1.
// Writes sqrt(M) values into `levels` (capacity >= 8); returns the count, or 0
// for an unsupported M.
int qam_levels(int32_t modulation, float* levels);

// Activation after the adaptive convolution (shared by the CPU and CUDA kernels).
enum Activation : int32_t { kActNone = 0, kActRelu = 1 };

namespace cpu {

// Posterior mean and variance of x ~ Uniform(QAM_M) given z = x + w,
// w ~ CN(0, var). z, mean: n complex; var, var_out: n real (complex variance,
// i.e. E|w|^2). var_out may be null. Stable for var -> 0 (log-sum-exp).
edgert_status gaussian_denoise(const cfloat* z, const float* var, int64_t n, int32_t modulation,
                               cfloat* mean, float* var_out);

// Batched MMNet detection.
//   H      [G, Nr, Nt]
//   y      [G, B, Nr]
//   A      [T, G, Nt, Nr] full linear operators, or null when theta1 is given
//   theta1 [T, G] real, the iid form A_t = theta1_t H^H, or null when A is given
//   theta2 [T, G, Nt] real per-symbol noise scales
//   sigma2 [G] complex noise variance per receive antenna
// Each layer t: r = y - H x, z = x + A_t r,
//   v = theta2/Nt * (||I - A_t H||^2/||H||^2 * max(||r||^2 - Nr sigma2, 0)
//                    + ||A_t||^2 * sigma2),
//   the first term is ||I - A_t H||^2 times the residual symbol error power per user, the
//   second the noise A_t n passes on (E||A_t n||^2 = ||A_t||^2 sigma2).
//   x = E[x | z, v] (the Gaussian denoiser). x starts at 0.
// x_out: [T, G, B, Nt] if all_layers else [G, B, Nt].
// decisions: [G, B, Nt] nearest-constellation indices of the last layer's
//   x_hat (index = re_level * sqrt(M) + im_level), or null.
edgert_status mmnet_detect(const MMNetShape& shape, const cfloat* H, const cfloat* y, const cfloat* A,
                           const float* theta1, const float* theta2, const float* sigma2, bool all_layers,
                           cfloat* x_out, int32_t* decisions);

// MMNet training (full-A form), CPU: the forward of a training graph with a noise variance per
// vector, recording a tape for the backward. Same layer as mmnet_detect with sigma2 [G, B].
//   xs     [T, G, B, 2, Nt] float: every layer's estimate, real parts then imaginary parts
//   tape   [mmnet_tape_size(shape)] float, filled by the forward, read by the backward
// The backward takes dL/dxs and writes dL/dA (complex, dL/dRe + i dL/dIm, [T, G, Nt, Nr]) and
// dL/dtheta2 [T, G, Nt]; H, y and sigma2 are constants.
int64_t mmnet_tape_size(const MMNetShape& shape);
edgert_status mmnet_train_forward(const MMNetShape& shape, const cfloat* H, const cfloat* y, const float* sigma2,
                                  const cfloat* A, const float* theta2, float* xs, float* tape);
edgert_status mmnet_train_backward(const MMNetShape& shape, const cfloat* H, const cfloat* y, const float* sigma2,
                                   const cfloat* A, const float* theta2, const float* xs, const float* tape,
                                   const float* grad_xs, cfloat* grad_A, float* grad_theta2);

// The same with MMNet's training loss fused in (what mmnet_train_backward would get from it, without
// materialising dL/dxs):
//   loss[g] = 1 / (T B) sum_{t, b} ||xs[t, g, b] - target[g, b]||^2   (target [G, B, 2, Nt], loss [G])
// i.e. every layer's squared error, averaged over layers and vectors; the backward takes dL/dloss [G].
// B = 0 with G > 0 is EDGERT_ERR_SHAPE (a mean over no vectors).
edgert_status mmnet_train_mse_forward(const MMNetShape& shape, const cfloat* H, const cfloat* y, const float* sigma2,
                                      const cfloat* A, const float* theta2, const float* target, float* xs,
                                      float* tape, float* loss);
edgert_status mmnet_train_mse_backward(const MMNetShape& shape, const cfloat* H, const cfloat* y, const float* sigma2,
                                       const cfloat* A, const float* theta2, const float* xs, const float* tape,
                                       const float* target, const float* grad_loss, cfloat* grad_A,
                                       float* grad_theta2);

// ---- Sparse delta patching ---------------------------------------------
// weights[indices[i]] (+)= values[i]; dtypes: weights F32|F16, indices I32|U32,
// values F32|F16. Indices must be strictly increasing and < n_weights; this is
// checked for all of them before anything is written (on failure the weights
// are unchanged and the message names the first offending position).
// ADD sums in fp32 and rounds once (to nearest even) to the weights' dtype;
// SET converts the value (same dtype: the bits are copied). Uses the kernel
// thread pool; not safe against concurrent writers of the same weights.
edgert_status sparse_patch(void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                           edgert_dtype index_dtype, const void* values, edgert_dtype values_dtype,
                           size_t count, edgert_patch_mode mode);

// out[i] = weights[indices[i]] converted to out_dtype (F32|F16). Same index checks;
// nothing is written on failure.
edgert_status sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights,
                            const void* indices, edgert_dtype index_dtype, size_t count, void* out,
                            edgert_dtype out_dtype);

// ---- Adaptive (per-patch) convolution -----------------------------------
// x [N, Cin, H, W]; the frame is tiled into P x P patches (grid Ph = ceil(H/P),
// Pw = ceil(W/P)); patch (i, j) of image n has its own 3x3 kernel
// kernels [N, Ph, Pw, F, Cin, 3, 3] and bias [N, Ph, Pw, F].
// out [N, F, H, W] = act(conv3x3(patch, W_p) + b_p) where the convolution sees
// zeros outside its own patch (and outside the frame).
edgert_status adaptive_conv(const float* x, const float* kernels, const float* bias, int64_t n, int64_t c_in,
                            int64_t height, int64_t width, int64_t f_out, int64_t patch, int32_t activation,
                            float* out);

// ---- DNNGrad block averaging ---------------------------------------------
// grad [N, C, H, W] -> out [N, ceil(H/b), ceil(W/b)], the mean of |grad| over
// channels and each b x b block; partial edge blocks average their valid pixels.
edgert_status block_average(const float* grad, int64_t n, int64_t c, int64_t height, int64_t width,
                            int64_t block, float* out);

}  // namespace cpu

namespace cuda {
// Same semantics as the CPU versions; device pointers; `stream` is a
// cudaStream_t (nullptr = default stream). Return EDGERT_ERR_BACKEND_UNAVAILABLE
// when no usable device exists and EDGERT_ERR_CUDA when a CUDA call fails.
edgert_status gaussian_denoise(const cfloat* z, const float* var, int64_t n, int32_t modulation, cfloat* mean,
                               float* var_out, void* stream);
edgert_status mmnet_detect(const MMNetShape& shape, const cfloat* H, const cfloat* y, const cfloat* A,
                           const float* theta1, const float* theta2, const float* sigma2, bool all_layers,
                           cfloat* x_out, int32_t* decisions, void* stream);
// Synchronous: validates indices on the device, then patches only if all are valid.
edgert_status sparse_patch(void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                           edgert_dtype index_dtype, const void* values, edgert_dtype values_dtype,
                           size_t count, edgert_patch_mode mode, void* stream);
edgert_status sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights,
                            const void* indices, edgert_dtype index_dtype, size_t count, void* out,
                            edgert_dtype out_dtype, void* stream);
edgert_status adaptive_conv(const float* x, const float* kernels, const float* bias, int64_t n, int64_t c_in,
                            int64_t height, int64_t width, int64_t f_out, int64_t patch, int32_t activation,
                            float* out, void* stream);
edgert_status block_average(const float* grad, int64_t n, int64_t c, int64_t height, int64_t width,
                            int64_t block, float* out, void* stream);
}  // namespace cuda

}  // namespace edgert
