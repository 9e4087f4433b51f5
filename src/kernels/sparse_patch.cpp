#include <atomic>
#include <type_traits>
#include <cstring>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/parallel.hpp"
#include "edgert/kernels.hpp"

namespace edgert::cpu {

using detail::fail;

namespace {

constexpr int64_t kGrain = 1 << 14;

struct F16 {
  uint16_t bits;
};

template <typename T>
inline float load(const T* p, size_t i) {
  return static_cast<float>(p[i]);
}
template <>
inline float load<F16>(const F16* p, size_t i) {
  return detail::half_to_float(p[i].bits);
}
template <typename T>
inline void store(T* p, size_t i, float v) {
  p[i] = v;
}
template <>
inline void store<F16>(F16* p, size_t i, float v) {
  p[i].bits = detail::float_to_half(v);
}

// Checks strictly increasing and in range for every index; reports the first
// offending position (lowest i) so the message is deterministic.
template <typename I>
edgert_status validate_indices(const I* idx, size_t count, size_t n_weights, const char* op) {
  std::atomic<int64_t> first_bad{static_cast<int64_t>(count)};
  detail::parallel_for(static_cast<int64_t>(count), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t v = static_cast<uint64_t>(static_cast<std::make_unsigned_t<I>>(idx[i]));
      const bool negative = std::is_signed_v<I> && idx[i] < 0;
      const bool unsorted = i > 0 && !(idx[i - 1] < idx[i]);
      if (negative || v >= n_weights || unsorted) {
        int64_t cur = first_bad.load();
        while (i < cur && !first_bad.compare_exchange_weak(cur, i)) {
        }
        return;
      }
    }
  });
  const int64_t bad = first_bad.load();
  if (bad == static_cast<int64_t>(count)) return EDGERT_OK;
  const long long value = static_cast<long long>(idx[bad]);
  if (value < 0 || static_cast<uint64_t>(value) >= n_weights) {
    return fail(EDGERT_ERR_INDEX_OUT_OF_RANGE, "%s: index %lld at position %lld is out of range [0, %llu)", op, value,
                static_cast<long long>(bad), static_cast<unsigned long long>(n_weights));
  }
  return fail(EDGERT_ERR_INDEX_UNSORTED,
              "%s: indices must be strictly increasing: position %lld holds %lld after %lld", op,
              static_cast<long long>(bad), value, static_cast<long long>(idx[bad - 1]));
}

template <typename W, typename I, typename V>
void apply(W* w, const I* idx, const V* val, size_t count, edgert_patch_mode mode) {
  detail::parallel_for(static_cast<int64_t>(count), kGrain, [&](int64_t begin, int64_t end) {
    if (mode == EDGERT_PATCH_ADD) {
      for (int64_t i = begin; i < end; ++i) {
        const size_t k = static_cast<size_t>(idx[i]);
        store(w, k, load(w, k) + load(val, static_cast<size_t>(i)));
      }
    } else {
      for (int64_t i = begin; i < end; ++i) store(w, static_cast<size_t>(idx[i]), load(val, static_cast<size_t>(i)));
    }
  });
}

template <typename W, typename I, typename O>
void gather(const W* w, const I* idx, size_t count, O* out) {
  detail::parallel_for(static_cast<int64_t>(count), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) store(out, static_cast<size_t>(i), load(w, static_cast<size_t>(idx[i])));
  });
}

bool is_float(edgert_dtype d) { return d == EDGERT_F32 || d == EDGERT_F16; }
bool is_index(edgert_dtype d) { return d == EDGERT_I32 || d == EDGERT_U32; }

template <typename I>
edgert_status validate(const void* indices, edgert_dtype index_dtype, size_t count, size_t n, const char* op) {
  (void)index_dtype;
  return validate_indices(static_cast<const I*>(indices), count, n, op);
}

edgert_status check_args(const void* weights, edgert_dtype wdt, const void* indices, edgert_dtype idt,
                         const void* values, edgert_dtype vdt, size_t count, const char* op, const char* values_name) {
  if (!is_float(wdt)) return fail(EDGERT_ERR_DTYPE, "%s: weights must be float32 or float16 (dtype %d)", op, wdt);
  if (!is_index(idt)) return fail(EDGERT_ERR_DTYPE, "%s: indices must be int32 or uint32 (dtype %d)", op, idt);
  if (!is_float(vdt)) return fail(EDGERT_ERR_DTYPE, "%s: %s must be float32 or float16 (dtype %d)", op, values_name, vdt);
  if (count > 0 && (weights == nullptr || indices == nullptr || values == nullptr)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: null buffer with count %zu", op, count);
  }
  return EDGERT_OK;
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
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "%s: mode must be add (0) or set (1), got %d", op, mode);
  }
  if (count == 0) return EDGERT_OK;
  const edgert_status st = index_dtype == EDGERT_I32 ? validate<int32_t>(indices, index_dtype, count, n_weights, op)
                                                     : validate<uint32_t>(indices, index_dtype, count, n_weights, op);
  if (st != EDGERT_OK) return st;

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
  const edgert_status st = index_dtype == EDGERT_I32 ? validate<int32_t>(indices, index_dtype, count, n_weights, op)
                                                     : validate<uint32_t>(indices, index_dtype, count, n_weights, op);
  if (st != EDGERT_OK) return st;
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
