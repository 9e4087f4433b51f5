// Sparse delta patching on the device. Synchronous by contract: one kernel
// finds the lowest invalid position (atomicMin) into a device word, the apply
// kernel, queued behind it on the same stream, writes nothing unless that word
// says every index is valid, and the host reads the word back once at the end
// (one synchronisation per call). Nothing is written on failure and the error
// message matches the CPU kernel's.
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "edgert/kernels.hpp"

namespace edgert::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ float to_f32(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) {
  return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T from_f32(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}

// *first_bad starts at all-ones; every invalid position lowers it.
template <typename I>
__global__ void validate_kernel(const I* __restrict__ idx, unsigned long long count, unsigned long long n,
                                unsigned long long* __restrict__ first_bad) {
  for (unsigned long long i = blockIdx.x * static_cast<unsigned long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<unsigned long long>(gridDim.x) * blockDim.x) {
    const I v = idx[i];
    const bool negative = std::is_signed<I>::value && v < 0;
    const bool out_of_range = negative || static_cast<unsigned long long>(v) >= n;
    const bool unsorted = i > 0 && !(idx[i - 1] < v);
    if (out_of_range || unsorted) atomicMin(first_bad, i);
  }
}

template <typename W, typename I, typename V>
__global__ void apply_kernel(W* __restrict__ w, const I* __restrict__ idx, const V* __restrict__ val,
                             unsigned long long count, int mode, const unsigned long long* __restrict__ first_bad) {
  if (*first_bad != ~0ull) return;  // some index is invalid: the host reports it, nothing is written
  for (unsigned long long i = blockIdx.x * static_cast<unsigned long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<unsigned long long>(gridDim.x) * blockDim.x) {
    const size_t k = static_cast<size_t>(idx[i]);
    if constexpr (std::is_same<W, V>::value) {
      // Same dtype "set" copies the bits, as on the CPU.
      if (mode == EDGERT_PATCH_SET) {
        w[k] = val[i];
        continue;
      }
    }
    const float v = to_f32(val[i]);
    w[k] = from_f32<W>(mode == EDGERT_PATCH_ADD ? to_f32(w[k]) + v : v);
  }
}

template <typename W, typename I, typename O>
__global__ void gather_kernel(const W* __restrict__ w, const I* __restrict__ idx, unsigned long long count,
                              O* __restrict__ out, const unsigned long long* __restrict__ first_bad) {
  if (*first_bad != ~0ull) return;
  for (unsigned long long i = blockIdx.x * static_cast<unsigned long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<unsigned long long>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same<W, O>::value) {
      out[i] = w[static_cast<size_t>(idx[i])];
    } else {
      out[i] = from_f32<O>(to_f32(w[static_cast<size_t>(idx[i])]));
    }
  }
}

bool is_float(edgert_dtype d) { return d == EDGERT_F32 || d == EDGERT_F16; }
bool is_index(edgert_dtype d) { return d == EDGERT_I32 || d == EDGERT_U32; }

edgert_status check_args(const void* weights, edgert_dtype wdt, const void* indices, edgert_dtype idt,
                         const void* values, edgert_dtype vdt, size_t count, const char* op, const char* values_name) {
  using detail::fail;
  if (!is_float(wdt)) {
    return fail(EDGERT_ERR_DTYPE, "%s: weights must be float32 or float16 (edgert_dtype %d)", op, static_cast<int>(wdt));
  }
  if (!is_index(idt)) {
    return fail(EDGERT_ERR_DTYPE, "%s: indices must be int32 or uint32 (edgert_dtype %d)", op, static_cast<int>(idt));
  }
  if (!is_float(vdt)) {
    return fail(EDGERT_ERR_DTYPE, "%s: %s must be float32 or float16 (edgert_dtype %d)", op, values_name,
                static_cast<int>(vdt));
  }
  if (count > 0 && (weights == nullptr || indices == nullptr || values == nullptr)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: null buffer with count %zu", op, count);
  }
  return EDGERT_OK;
}

// Reads the two host-visible words needed for the message (the bad index and
// its predecessor) and formats the same error as the CPU kernel.
template <typename I>
edgert_status report(const I* idx, size_t bad, size_t n, cudaStream_t stream, const char* op) {
  I pair[2] = {0, 0};
  const size_t first = bad > 0 ? bad - 1 : bad;
  const size_t words = bad > 0 ? 2 : 1;
  if (edgert_status st = cuda_detail::check(
          cudaMemcpyAsync(pair + (bad > 0 ? 0 : 1), idx + first, words * sizeof(I), cudaMemcpyDeviceToHost, stream),
          "sparse index readback");
      st != EDGERT_OK)
    return st;
  if (edgert_status st = cuda_detail::check(cudaStreamSynchronize(stream), "sparse index readback"); st != EDGERT_OK)
    return st;
  const long long value = static_cast<long long>(pair[1]);
  if (value < 0 || static_cast<unsigned long long>(value) >= n) {
    return detail::fail(EDGERT_ERR_INDEX_OUT_OF_RANGE, "%s: index %lld at position %zu is out of range [0, %zu)", op,
                        value, bad, n);
  }
  return detail::fail(EDGERT_ERR_INDEX_UNSORTED,
                      "%s: indices must be strictly increasing: position %zu holds %lld after %lld", op, bad, value,
                      static_cast<long long>(pair[0]));
}

// The device word that gates the write kernels: all-ones means "no bad position" (greater than any count).
// queue() allocates it and queues the validation kernel; the caller queues its gated kernel with flag();
// finish() reads the word back, frees it and waits for the stream, then formats the error if there is one.
class IndexCheck {
 public:
  IndexCheck(cudaStream_t stream, const char* op) : stream_(stream), op_(op) {}
  IndexCheck(const IndexCheck&) = delete;
  IndexCheck& operator=(const IndexCheck&) = delete;
  ~IndexCheck() {
    if (flag_ != nullptr) cudaFreeAsync(flag_, stream_);  // only on an early return: finish() frees it
  }

  template <typename I>
  edgert_status queue(const I* idx, size_t count, size_t n) {
    const cudaError_t alloc = cuda_detail::scratch_alloc(reinterpret_cast<void**>(&flag_), sizeof(*flag_), stream_);
    if (edgert_status st = cuda_detail::check(alloc, "sparse validate alloc"); st != EDGERT_OK) {
      flag_ = nullptr;
      return st;
    }
    if (edgert_status st =
            cuda_detail::check(cudaMemsetAsync(flag_, 0xff, sizeof(*flag_), stream_), "sparse validate init");
        st != EDGERT_OK)
      return st;
    validate_kernel<I><<<cuda_detail::blocks_for(static_cast<long long>(count), kThreads), kThreads, 0, stream_>>>(
        idx, count, n, flag_);
    return cuda_detail::check(cudaGetLastError(), "sparse validate launch");
  }

  const unsigned long long* flag() const { return flag_; }

  // Waits for everything queued; EDGERT_OK iff every index was valid (then the gated kernel ran).
  template <typename I>
  edgert_status finish(const I* idx, size_t count, size_t n) {
    unsigned long long first_bad = ~0ull;
    edgert_status st = cuda_detail::check(
        cudaMemcpyAsync(&first_bad, flag_, sizeof(first_bad), cudaMemcpyDeviceToHost, stream_),
        "sparse validate readback");
    const edgert_status free_st = cuda_detail::check(cudaFreeAsync(flag_, stream_), "sparse validate free");
    flag_ = nullptr;
    if (edgert_status sync_st = cuda_detail::check(cudaStreamSynchronize(stream_), op_);
        st == EDGERT_OK && sync_st != EDGERT_OK)
      st = sync_st;
    if (st != EDGERT_OK) return st;
    if (free_st != EDGERT_OK) return free_st;
    if (first_bad >= count) return EDGERT_OK;
    return report(idx, static_cast<size_t>(first_bad), n, stream_, op_);
  }

 private:
  cudaStream_t stream_;
  const char* op_;
  unsigned long long* flag_ = nullptr;
};

template <typename W, typename I, typename V>
void launch_apply(W* w, const I* idx, const V* val, size_t count, edgert_patch_mode mode, cudaStream_t stream,
                  const unsigned long long* first_bad) {
  apply_kernel<W, I, V><<<cuda_detail::blocks_for(static_cast<long long>(count), kThreads), kThreads, 0, stream>>>(
      w, idx, val, count, static_cast<int>(mode), first_bad);
}

template <typename W, typename I, typename O>
void launch_gather(const W* w, const I* idx, size_t count, O* out, cudaStream_t stream,
                   const unsigned long long* first_bad) {
  gather_kernel<W, I, O><<<cuda_detail::blocks_for(static_cast<long long>(count), kThreads), kThreads, 0, stream>>>(
      w, idx, count, out, first_bad);
}

// Validation, the gated kernel that `launch(typed indices)` queues, and the single wait at the end.
template <typename Launch>
edgert_status checked_launch(const void* indices, edgert_dtype index_dtype, size_t count, size_t n,
                             cudaStream_t stream, const char* op, Launch&& launch) {
  IndexCheck check(stream, op);
  auto run = [&](const auto* idx) -> edgert_status {
    if (edgert_status st = check.queue(idx, count, n); st != EDGERT_OK) return st;
    launch(idx, check.flag());
    if (edgert_status st = cuda_detail::check(cudaGetLastError(), op); st != EDGERT_OK) return st;
    return check.finish(idx, count, n);
  };
  return index_dtype == EDGERT_I32 ? run(static_cast<const int32_t*>(indices))
                                   : run(static_cast<const uint32_t*>(indices));
}

}  // namespace

edgert_status sparse_patch(void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                           edgert_dtype index_dtype, const void* values, edgert_dtype values_dtype, size_t count,
                           edgert_patch_mode mode, void* stream) {
  const char* op = "sparse_patch";
  if (edgert_status st = check_args(weights, weights_dtype, indices, index_dtype, values, values_dtype, count, op,
                                    "values");
      st != EDGERT_OK)
    return st;
  if (mode != EDGERT_PATCH_ADD && mode != EDGERT_PATCH_SET) {
    return detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: mode must be add (0) or set (1), got %d", op,
                        static_cast<int>(mode));
  }
  if (count == 0) return EDGERT_OK;
  cudaStream_t s = cuda_detail::as_stream(stream);
  return checked_launch(indices, index_dtype, count, n_weights, s, op, [&](const auto* idx, const auto* flag) {
    auto dispatch_values = [&](auto* w) {
      if (values_dtype == EDGERT_F32)
        launch_apply(w, idx, static_cast<const float*>(values), count, mode, s, flag);
      else
        launch_apply(w, idx, static_cast<const __half*>(values), count, mode, s, flag);
    };
    if (weights_dtype == EDGERT_F32)
      dispatch_values(static_cast<float*>(weights));
    else
      dispatch_values(static_cast<__half*>(weights));
  });
}

edgert_status sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                            edgert_dtype index_dtype, size_t count, void* out, edgert_dtype out_dtype, void* stream) {
  const char* op = "sparse_gather";
  if (edgert_status st = check_args(weights, weights_dtype, indices, index_dtype, out, out_dtype, count, op, "out");
      st != EDGERT_OK)
    return st;
  if (count == 0) return EDGERT_OK;
  cudaStream_t s = cuda_detail::as_stream(stream);
  return checked_launch(indices, index_dtype, count, n_weights, s, op, [&](const auto* idx, const auto* flag) {
    auto dispatch_out = [&](const auto* w) {
      if (out_dtype == EDGERT_F32)
        launch_gather(w, idx, count, static_cast<float*>(out), s, flag);
      else
        launch_gather(w, idx, count, static_cast<__half*>(out), s, flag);
    };
    if (weights_dtype == EDGERT_F32)
      dispatch_out(static_cast<const float*>(weights));
    else
      dispatch_out(static_cast<const __half*>(weights));
  });
}

}  // namespace edgert::cuda
