// Sparse delta patching: weights[indices[i]] (+)= values[i] and its inverse,
// the gather. Two passes in one parallel region: a branch-free streaming check
// of all indices, a barrier (so nothing is written on failure), then the apply. Values are converted to fp32
// in blocks (F16C / NEON where available) and scattered with plain scalar
// stores, which is what random single-element updates cost anyway. The apply
// step is also the update-packet slot's arithmetic (detail::sparse_apply).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/half_convert.hpp"
#include "core/parallel.hpp"

#if defined(EDGERT_WITH_OPENMP)
#include <omp.h>
#endif
#include "edgert/kernels.hpp"
#include "kernels/sparse_apply.hpp"

namespace edgert::cpu {

using detail::fail;

namespace {

// Indices per thread below which fewer threads are used. Small: sparse updates
// are bound by cache-miss latency, so a second thread pays off early.
constexpr size_t kGrain = 4096;
// Elements converted at a time: the block buffers stay in L1.
constexpr size_t kBlock = 512;

struct F16 {
  uint16_t bits;
};

// True iff indices [begin, end) are valid given that the ones before are:
// strictly increasing (in the index type's own order, also across the slice
// start) and, given that, first >= 0 and last < n. One vectorisable pass with
// no early exit.
template <typename I>
bool slice_valid(const I* idx, size_t begin, size_t end, size_t n) {
  if (begin >= end) return true;
  if (std::is_signed_v<I> && idx[begin] < 0) return false;
  if (static_cast<uint64_t>(idx[end - 1]) >= n) return false;
  const size_t from = begin > 0 ? begin - 1 : 0;
  const I* p = idx + from;
  unsigned bad = 0;
  for (size_t i = 0; i + 1 < end - from; ++i) bad |= static_cast<unsigned>(!(p[i] < p[i + 1]));
  return bad == 0;
}

// Validates all `count` indices, then (only if all are valid) calls
// body(begin, end) over slices of [0, count). With several threads each one
// checks its slice, all meet at a barrier, and each applies the slice it has
// just read (its indices are still in that core's cache): one fork/join.
// Returns false (nothing done) if an index is invalid.
template <typename I, typename Body>
bool validate_then_run(const I* idx, size_t count, size_t n, Body&& body) {
#if defined(EDGERT_WITH_OPENMP)
  const int threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(detail::max_threads()), count / kGrain));
  if (threads > 1) {
    std::atomic<bool> bad{false};
#pragma omp parallel num_threads(threads)
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
      const size_t begin = count * t / nt, end = count * (t + 1) / nt;
      if (!slice_valid(idx, begin, end, n)) bad.store(true, std::memory_order_relaxed);
#pragma omp barrier
      if (!bad.load(std::memory_order_relaxed)) body(begin, end);
    }
    return !bad.load(std::memory_order_relaxed);
  }
#endif
  if (!slice_valid(idx, 0, count, n)) return false;
  body(size_t{0}, count);
  return true;
}

// The slow path after validation failed: finds the lowest offending position
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

// Values [b, b + m) as fp32: a pointer into the input, or converted into buf.
inline const float* values_f32(const float* val, size_t b, size_t, float*) { return val + b; }
inline const float* values_f32(const F16* val, size_t b, size_t m, float* buf) {
  detail::half_to_float_n(&val[b].bits, buf, m);
  return buf;
}

// Index i of a run: the i-th of an index array, or i itself for a dense run.
struct Dense {};
inline size_t at(const int32_t* idx, size_t i) { return static_cast<size_t>(idx[i]); }
inline size_t at(const uint32_t* idx, size_t i) { return static_cast<size_t>(idx[i]); }
inline size_t at(Dense, size_t i) { return i; }

template <typename Idx, typename V>
void apply_f32(float* w, Idx idx, const V* val, size_t begin, size_t end, edgert_patch_mode mode) {
  float vbuf[kBlock];
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t m = std::min(kBlock, end - b);
    const float* v = values_f32(val, b, m, vbuf);
    if (mode == EDGERT_PATCH_ADD) {
      for (size_t j = 0; j < m; ++j) w[at(idx, b + j)] += v[j];
    } else {
      for (size_t j = 0; j < m; ++j) w[at(idx, b + j)] = v[j];
    }
  }
}

// fp16 weights: gather the touched weights, widen, add in fp32, round once to
// fp16 (the same as torch's half arithmetic), scatter back.
template <typename Idx, typename V>
void apply_f16(F16* w, Idx idx, const V* val, size_t begin, size_t end, edgert_patch_mode mode) {
  float vbuf[kBlock], wbuf[kBlock];
  uint16_t hbuf[kBlock];
  uint16_t* wb = &w[0].bits;
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t m = std::min(kBlock, end - b);
    if constexpr (std::is_same_v<V, F16>) {
      if (mode == EDGERT_PATCH_SET) {  // same type: copy the bits exactly
        for (size_t j = 0; j < m; ++j) wb[at(idx, b + j)] = val[b + j].bits;
        continue;
      }
    }
    const float* v = values_f32(val, b, m, vbuf);
    if (mode == EDGERT_PATCH_ADD) {
      for (size_t j = 0; j < m; ++j) hbuf[j] = wb[at(idx, b + j)];
      detail::half_to_float_n(hbuf, wbuf, m);
      for (size_t j = 0; j < m; ++j) wbuf[j] += v[j];
      v = wbuf;
    }
    detail::float_to_half_n(v, hbuf, m);
    for (size_t j = 0; j < m; ++j) wb[at(idx, b + j)] = hbuf[j];
  }
}

template <typename W, typename Idx, typename V>
void apply(W* w, Idx idx, const V* val, size_t begin, size_t end, edgert_patch_mode mode) {
  if constexpr (std::is_same_v<W, float>) {
    apply_f32(w, idx, val, begin, end, mode);
  } else {
    apply_f16(w, idx, val, begin, end, mode);
  }
}

// The typed apply of a whole run for runtime dtypes.
template <typename Idx>
void apply_any(void* weights, edgert_dtype weights_dtype, Idx idx, const void* values, edgert_dtype values_dtype,
               size_t begin, size_t end, edgert_patch_mode mode) {
  auto with_values = [&](auto* w) {
    if (values_dtype == EDGERT_F32)
      apply(w, idx, static_cast<const float*>(values), begin, end, mode);
    else
      apply(w, idx, static_cast<const F16*>(values), begin, end, mode);
  };
  if (weights_dtype == EDGERT_F32)
    with_values(static_cast<float*>(weights));
  else
    with_values(static_cast<F16*>(weights));
}

template <typename W, typename I, typename O>
void gather(const W* w, const I* idx, size_t b0, size_t e0, O* out) {
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

// Validates, then runs body(idx, begin, end) with the typed index pointer;
// on an invalid index reports the first one and runs nothing.
template <typename Body>
edgert_status checked(const void* indices, edgert_dtype index_dtype, size_t count, size_t n, const char* op,
                      Body&& body) {
  auto run = [&](auto* idx) {
    const bool ok = validate_then_run(idx, count, n, [&](size_t begin, size_t end) { body(idx, begin, end); });
    return ok ? EDGERT_OK : report_first_bad(idx, count, n, op);
  };
  return index_dtype == EDGERT_I32 ? run(static_cast<const int32_t*>(indices))
                                   : run(static_cast<const uint32_t*>(indices));
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
  return checked(indices, index_dtype, count, n_weights, op, [&](auto* idx, size_t begin, size_t end) {
    apply_any(weights, weights_dtype, idx, values, values_dtype, begin, end, mode);
  });
}

edgert_status sparse_gather(const void* weights, edgert_dtype weights_dtype, size_t n_weights, const void* indices,
                            edgert_dtype index_dtype, size_t count, void* out, edgert_dtype out_dtype) {
  const char* op = "sparse_gather";
  if (edgert_status st = check_args(weights, weights_dtype, indices, index_dtype, out, out_dtype, count, op, "out");
      st != EDGERT_OK)
    return st;
  if (count == 0) return EDGERT_OK;
  auto with_out = [&](auto* w) {
    return checked(indices, index_dtype, count, n_weights, op, [&](auto* idx, size_t begin, size_t end) {
      if (out_dtype == EDGERT_F32)
        gather(w, idx, begin, end, static_cast<float*>(out));
      else
        gather(w, idx, begin, end, static_cast<F16*>(out));
    });
  };
  return weights_dtype == EDGERT_F32 ? with_out(static_cast<const float*>(weights))
                                     : with_out(static_cast<const F16*>(weights));
}

}  // namespace edgert::cpu

namespace edgert::detail {

void sparse_apply(void* weights, edgert_dtype weights_dtype, const uint32_t* idx, const void* values,
                  edgert_dtype values_dtype, size_t count, edgert_patch_mode mode) {
  if (idx == nullptr) {
    cpu::apply_any(weights, weights_dtype, cpu::Dense{}, values, values_dtype, 0, count, mode);
  } else {
    cpu::apply_any(weights, weights_dtype, idx, values, values_dtype, 0, count, mode);
  }
}

}  // namespace edgert::detail
