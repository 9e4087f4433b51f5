// Sparse delta patching: weights[indices[i]] (+)= values[i] and its inverse,
// the gather. Two passes: a branch-free streaming check of all indices (so
// nothing is written on failure), then the apply. Values are converted to fp32
// in blocks (F16C / NEON where available) and scattered with plain scalar
// stores, which is what random single-element updates cost anyway.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/half_convert.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"

namespace edgert::cpu {

using detail::fail;

namespace {

// Indices per parallel work item (large enough to amortise a fork/join).
constexpr int64_t kGrain = 1 << 14;
// Elements converted at a time: the block buffers stay in L1.
constexpr size_t kBlock = 512;

struct F16 {
  uint16_t bits;
};

// True iff every index is valid: strictly increasing (in the index type's own
// order) and, given that, first >= 0 and last < n. One vectorisable pass with
// no early exit per element.
template <typename I>
bool all_valid(const I* idx, size_t count, size_t n) {
  if (std::is_signed_v<I> && idx[0] < 0) return false;
  if (static_cast<uint64_t>(idx[count - 1]) >= n) return false;
  std::atomic<bool> unsorted{false};
  detail::parallel_for(static_cast<int64_t>(count) - 1, 4 * kGrain, [&](int64_t begin, int64_t end) {
    unsigned bad = 0;
    const I* p = idx + begin;
    for (int64_t i = 0; i < end - begin; ++i) bad |= static_cast<unsigned>(!(p[i] < p[i + 1]));
    if (bad) unsorted.store(true, std::memory_order_relaxed);
  });
  return !unsorted.load(std::memory_order_relaxed);
}

// The slow path after all_valid() failed: finds the lowest offending position
// so the message is deterministic, sets it and returns its status.
template <typename I>
edgert_status report_first_bad(const I* idx, size_t count, size_t n, const char* op) {
  for (size_t i = 0; i < count; ++i) {
    const long long value = static_cast<long long>(idx[i]);
    if (value < 0 || static_cast<unsigned long long>(value) >= n) {
      return fail(EDGERT_ERR_INDEX_OUT_OF_RANGE, "%s: index %lld at position %zu is out of range [0, %zu)", op, value,
                  i, n);
    }
    if (i > 0 && !(idx[i - 1] < idx[i])) {
      return fail(EDGERT_ERR_INDEX_UNSORTED,
                  "%s: indices must be strictly increasing: position %zu holds %lld after %lld", op, i, value,
                  static_cast<long long>(idx[i - 1]));
    }
  }
  return fail(EDGERT_ERR_INTERNAL, "%s: index validation disagreed with itself", op);
}

template <typename I>
edgert_status validate(const void* indices, size_t count, size_t n, const char* op) {
  const I* idx = static_cast<const I*>(indices);
  return all_valid(idx, count, n) ? EDGERT_OK : report_first_bad(idx, count, n, op);
}

// Values [b, b + m) as fp32: a pointer into the input, or converted into buf.
inline const float* values_f32(const float* val, size_t b, size_t, float*) { return val + b; }
inline const float* values_f32(const F16* val, size_t b, size_t m, float* buf) {
  detail::half_to_float_n(&val[b].bits, buf, m);
  return buf;
}

template <typename I, typename V>
void apply_f32(float* w, const I* idx, const V* val, size_t begin, size_t end, edgert_patch_mode mode) {
  float vbuf[kBlock];
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t m = std::min(kBlock, end - b);
    const float* v = values_f32(val, b, m, vbuf);
    const I* k = idx + b;
    if (mode == EDGERT_PATCH_ADD) {
      for (size_t j = 0; j < m; ++j) w[static_cast<size_t>(k[j])] += v[j];
    } else {
      for (size_t j = 0; j < m; ++j) w[static_cast<size_t>(k[j])] = v[j];
    }
  }
}

// fp16 weights: gather the touched weights, widen, add in fp32, round once to
// fp16 (the same as torch's half arithmetic), scatter back.
template <typename I, typename V>
void apply_f16(F16* w, const I* idx, const V* val, size_t begin, size_t end, edgert_patch_mode mode) {
  float vbuf[kBlock], wbuf[kBlock];
  uint16_t hbuf[kBlock];
  uint16_t* wb = &w[0].bits;
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t m = std::min(kBlock, end - b);
    const I* k = idx + b;
    if constexpr (std::is_same_v<V, F16>) {
      if (mode == EDGERT_PATCH_SET) {  // same type: copy the bits exactly
        for (size_t j = 0; j < m; ++j) wb[static_cast<size_t>(k[j])] = val[b + j].bits;
        continue;
      }
    }
    const float* v = values_f32(val, b, m, vbuf);
    if (mode == EDGERT_PATCH_ADD) {
      for (size_t j = 0; j < m; ++j) hbuf[j] = wb[static_cast<size_t>(k[j])];
      detail::half_to_float_n(hbuf, wbuf, m);
      for (size_t j = 0; j < m; ++j) wbuf[j] += v[j];
      v = wbuf;
    }
    detail::float_to_half_n(v, hbuf, m);
    for (size_t j = 0; j < m; ++j) wb[static_cast<size_t>(k[j])] = hbuf[j];
  }
}

template <typename W, typename I, typename V>
void apply(W* w, const I* idx, const V* val, size_t count, edgert_patch_mode mode) {
  detail::parallel_for(static_cast<int64_t>(count), kGrain, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<W, float>) {
      apply_f32(w, idx, val, static_cast<size_t>(begin), static_cast<size_t>(end), mode);
    } else {
      apply_f16(w, idx, val, static_cast<size_t>(begin), static_cast<size_t>(end), mode);
    }
  });
}

template <typename W, typename I, typename O>
void gather(const W* w, const I* idx, size_t count, O* out) {
  detail::parallel_for(static_cast<int64_t>(count), kGrain, [&](int64_t begin, int64_t end) {
    const size_t b0 = static_cast<size_t>(begin), e0 = static_cast<size_t>(end);
    if constexpr (std::is_same_v<W, O>) {
      for (size_t i = b0; i < e0; ++i) out[i] = w[static_cast<size_t>(idx[i])];
    } else if constexpr (std::is_same_v<W, float>) {  // fp32 -> fp16
      float buf[kBlock];
      for (size_t b = b0; b < e0; b += kBlock) {
        const size_t m = std::min(kBlock, e0 - b);
        for (size_t j = 0; j < m; ++j) buf[j] = w[static_cast<size_t>(idx[b + j])];
        detail::float_to_half_n(buf, &out[b].bits, m);
      }
    } else {  // fp16 -> fp32
      uint16_t buf[kBlock];
      for (size_t b = b0; b < e0; b += kBlock) {
        const size_t m = std::min(kBlock, e0 - b);
        for (size_t j = 0; j < m; ++j) buf[j] = w[static_cast<size_t>(idx[b + j])].bits;
        detail::half_to_float_n(buf, out + b, m);
      }
    }
  });
}

bool is_float(edgert_dtype d) { return d == EDGERT_F32 || d == EDGERT_F16; }
bool is_index(edgert_dtype d) { return d == EDGERT_I32 || d == EDGERT_U32; }

edgert_status check_args(const void* weights, edgert_dtype wdt, const void* indices, edgert_dtype idt,
                         const void* values, edgert_dtype vdt, size_t count, const char* op, const char* values_name) {
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

edgert_status validate_any(const void* indices, edgert_dtype index_dtype, size_t count, size_t n, const char* op) {
  return index_dtype == EDGERT_I32 ? validate<int32_t>(indices, count, n, op)
                                   : validate<uint32_t>(indices, count, n, op);
}

}  // namespace

edgert_status sparse_patch(void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                           edgert_dtype index_dtype, const void* values, edgert_dtype values_dtype, size_t count,
                           edgert_patch_mode mode) {
  const char* op = "sparse_patch";
  if (edgert_status st = check_args(weights, weights_dtype, indices, index_dtype, values, values_dtype, count, op,
                                    "values");
      st != EDGERT_OK)
    return st;
  if (mode != EDGERT_PATCH_ADD && mode != EDGERT_PATCH_SET) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: mode must be add (0) or set (1), got %d", op, static_cast<int>(mode));
  }
  if (count == 0) return EDGERT_OK;
  if (edgert_status st = validate_any(indices, index_dtype, count, n_weights, op); st != EDGERT_OK) return st;

  auto dispatch_values = [&](auto* w, auto* idx) {
    if (values_dtype == EDGERT_F32)
      apply(w, idx, static_cast<const float*>(values), count, mode);
    else
      apply(w, idx, static_cast<const F16*>(values), count, mode);
  };
  auto dispatch_index = [&](auto* w) {
    if (index_dtype == EDGERT_I32)
      dispatch_values(w, static_cast<const int32_t*>(indices));
    else
      dispatch_values(w, static_cast<const uint32_t*>(indices));
  };
  if (weights_dtype == EDGERT_F32)
    dispatch_index(static_cast<float*>(weights));
  else
    dispatch_index(static_cast<F16*>(weights));
  return EDGERT_OK;
}

edgert_status sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                            edgert_dtype index_dtype, size_t count, void* out, edgert_dtype out_dtype) {
  const char* op = "sparse_gather";
  if (edgert_status st = check_args(weights, weights_dtype, indices, index_dtype, out, out_dtype, count, op, "out");
      st != EDGERT_OK)
    return st;
  if (count == 0) return EDGERT_OK;
  if (edgert_status st = validate_any(indices, index_dtype, count, n_weights, op); st != EDGERT_OK) return st;
  auto dispatch_out = [&](auto* w, auto* idx) {
    if (out_dtype == EDGERT_F32)
      gather(w, idx, count, static_cast<float*>(out));
    else
      gather(w, idx, count, static_cast<F16*>(out));
  };
  auto dispatch_index = [&](auto* w) {
    if (index_dtype == EDGERT_I32)
      dispatch_out(w, static_cast<const int32_t*>(indices));
    else
      dispatch_out(w, static_cast<const uint32_t*>(indices));
  };
  if (weights_dtype == EDGERT_F32)
    dispatch_index(static_cast<const float*>(weights));
  else
    dispatch_index(static_cast<const F16*>(weights));
  return EDGERT_OK;
}

}  // namespace edgert::cpu

extern "C" edgert_status edgert_sparse_patch(void* weights, edgert_dtype weights_dtype, size_t n_weights,
                                             const void* indices, edgert_dtype index_dtype, const void* values,
                                             edgert_dtype values_dtype, size_t count, edgert_patch_mode mode) {
  return edgert::cpu::sparse_patch(weights, weights_dtype, n_weights, indices, index_dtype, values, values_dtype, count,
                                   mode);
}

extern "C" edgert_status edgert_sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights,
                                              const void* indices, edgert_dtype index_dtype, size_t count, void* out,
                                              edgert_dtype out_dtype) {
  return edgert::cpu::sparse_gather(weights, weights_dtype, n_weights, indices, index_dtype, count, out, out_dtype);
}
