#include "cuda/common.cuh"
#include "edgert/kernels.hpp"

namespace edgert::cuda {
namespace {

// One thread block per (image, block-row, block-col); threads stride over the
// C x b x b window and reduce in shared memory.
__global__ void block_average_kernel(const float* __restrict__ grad, long long c, long long height, long long width,
                                     long long block, long long rows, long long cols, float* __restrict__ out) {
  const long long item = blockIdx.x;
  const long long img = item / (rows * cols);
  const long long br = (item / cols) % rows, bc = item % cols;
  const long long h0 = br * block, w0 = bc * block;
  const long long vh = min(block, height - h0), vw = min(block, width - w0);
  const long long window = c * vh * vw;
  float sum = 0.0f;
  for (long long k = threadIdx.x; k < window; k += blockDim.x) {
    const long long ch = k / (vh * vw), rem = k % (vh * vw);
    const long long h = h0 + rem / vw, w = w0 + rem % vw;
    sum += fabsf(grad[((img * c + ch) * height + h) * width + w]);
  }
  __shared__ float partial[256];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[item] = window > 0 ? partial[0] / static_cast<float>(window) : 0.0f;
}

}  // namespace

edgert_status block_average(const float* grad, int64_t n, int64_t c, int64_t height, int64_t width,
                            int64_t block, float* out, void* stream) {
  if (n < 0 || c < 0 || height < 0 || width < 0) return detail::fail(EDGERT_ERR_SHAPE, "block_average: negative shape");
  if (block <= 0) return detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "block_average: block must be positive");
  const int64_t rows = (height + block - 1) / block, cols = (width + block - 1) / block;
  const long long items = n * rows * cols;
  if (items == 0) return EDGERT_OK;
  if ((grad == nullptr && c > 0) || out == nullptr) {
    return detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "block_average: null buffer");
  }
  if (items > 0x7fffffffLL) return detail::fail(EDGERT_ERR_SHAPE, "block_average: too many blocks for one launch");
  block_average_kernel<<<static_cast<unsigned>(items), 256, 0, cuda_detail::as_stream(stream)>>>(
      grad, c, height, width, block, rows, cols, out);
  return cuda_detail::check(cudaGetLastError(), "block_average launch");
}

}  // namespace edgert::cuda
