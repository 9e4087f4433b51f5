// Internal: a parallel-for over [0, n) on OpenMP threads when built with
// OpenMP, serial otherwise. Work items must be independent.
#pragma once

#include <cstdint>

#if defined(EDGERT_WITH_OPENMP)
#include <omp.h>
#endif

namespace edgert::detail {

inline int max_threads() {
#if defined(EDGERT_WITH_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Calls body(begin, end) on chunks of [0, n). `grain` is the smallest chunk
// worth a thread; small problems run inline without touching the thread pool.
template <typename Body>
void parallel_for(int64_t n, int64_t grain, Body&& body) {
  if (n <= 0) return;
#if defined(EDGERT_WITH_OPENMP)
  const int64_t threads = max_threads();
  if (threads > 1 && n > grain) {
    int64_t chunks = n / (grain > 0 ? grain : 1);
    if (chunks > threads * 4) chunks = threads * 4;
    if (chunks < 1) chunks = 1;
    const int64_t step = (n + chunks - 1) / chunks;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * step;
      const int64_t end = begin + step < n ? begin + step : n;
      if (begin < end) body(begin, end);
    }
    return;
  }
#endif
  body(int64_t{0}, n);
}

}  // namespace edgert::detail
