// Internal: eight-lane float vectors for the CPU kernels, and the clone attribute that compiles a hot
// loop twice (AVX2+FMA where the CPU has it, baseline otherwise; ifunc dispatch at load time, GCC on
// x86-64 Linux only).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
// flatten: every helper (templates included) is inlined into each clone, so it is compiled for the
// clone's target too.
#define EDGERT_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define EDGERT_KERNEL_CLONES
#endif

namespace edgert::cpu {

constexpr int64_t kLanes = 8;

// A GCC/Clang vector (AVX on x86-64-v3, two SSE/NEON registers elsewhere), or a plain array for other
// compilers. Loads and stores go through memcpy (unaligned, no aliasing questions).
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"  // internal, always-inlined helpers: no ABI crosses a call
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
// always_inline: the helpers are compiled inside the calling clone (AVX2 code in the x86-64-v3 one).
#define EDGERT_VINLINE __attribute__((always_inline)) inline
// Exact for every s; GCC 12 compiled other spellings ({s, ..., s}, s - v8f{}) to eight inserts.
EDGERT_VINLINE v8f splat(float s) { return s * (v8f{} + 1.0f); }
EDGERT_VINLINE v8f fmadd(v8f acc, float a, v8f b) { return acc + a * b; }
EDGERT_VINLINE v8f relu(v8f a) {
  const v8f zero = {};
  return a > zero ? a : zero;
}
// |a| by clearing the sign bits (one AND; also exact for -0, infinities and NaNs)
EDGERT_VINLINE v8f abs8(v8f a) {
  v8i bits;
  std::memcpy(&bits, &a, sizeof bits);
  bits &= 0x7fffffff;
  std::memcpy(&a, &bits, sizeof a);
  return a;
}
#else
#define EDGERT_VINLINE inline
struct v8f {
  float lane[8];
  v8f& operator+=(const v8f& o) {
    for (int i = 0; i < 8; ++i) lane[i] += o.lane[i];
    return *this;
  }
  friend v8f operator+(v8f a, const v8f& b) { return a += b; }
};
inline v8f splat(float s) {
  v8f r;
  for (float& l : r.lane) l = s;
  return r;
}
inline v8f fmadd(v8f acc, float a, v8f b) {
  for (int i = 0; i < 8; ++i) acc.lane[i] += a * b.lane[i];
  return acc;
}
inline v8f relu(v8f a) {
  for (float& l : a.lane) l = l > 0.0f ? l : 0.0f;
  return a;
}
inline v8f abs8(v8f a) {
  for (float& l : a.lane) l = std::fabs(l);
  return a;
}
#endif

// Asks for the cache line at p ahead of a store (a no-op on compilers without the builtin).
EDGERT_VINLINE void prefetch_for_write(const float* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p, 1, 3);
#else
  (void)p;
#endif
}
EDGERT_VINLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
EDGERT_VINLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

}  // namespace edgert::cpu
