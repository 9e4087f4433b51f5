#include "core/half_convert.hpp"

#include <cstring>

#include "core/half.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define EDGERT_X86_F16C 1
#endif

namespace edgert::detail {

namespace {

[[maybe_unused]] void half_to_float_portable(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}

[[maybe_unused]] void float_to_half_portable(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
}

#if defined(EDGERT_X86_F16C)
__attribute__((target("avx,f16c"))) void half_to_float_f16c(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

__attribute__((target("avx,f16c"))) void float_to_half_f16c(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// CPUID leaf 1: ECX bit 29 = F16C, bit 28 = AVX, bit 27 = OSXSAVE (the OS saves
// the YMM state). Read directly: clang's __builtin_cpu_supports has no "f16c".
bool cpu_has_f16c() {
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const unsigned need = (1u << 29) | (1u << 28) | (1u << 27);
    return (ecx & need) == need;
  }();
  return has;
}
#endif

}  // namespace

void half_to_float_n(const uint16_t* src, float* dst, size_t n) {
#if defined(EDGERT_X86_F16C)
  if (cpu_has_f16c()) return half_to_float_f16c(src, dst, n);
#elif defined(__aarch64__)
  // __fp16 widening is exact; the loop vectorises to fcvtl.
  for (size_t i = 0; i < n; ++i) {
    __fp16 h;
    std::memcpy(&h, src + i, sizeof(h));
    dst[i] = static_cast<float>(h);
  }
  return;
#endif
  half_to_float_portable(src, dst, n);
}

void float_to_half_n(const float* src, uint16_t* dst, size_t n) {
#if defined(EDGERT_X86_F16C)
  if (cpu_has_f16c()) return float_to_half_f16c(src, dst, n);
#elif defined(__aarch64__)
  // fcvt rounds to nearest even (the default FPCR mode, which edgert never changes).
  for (size_t i = 0; i < n; ++i) {
    const __fp16 h = static_cast<__fp16>(src[i]);
    std::memcpy(dst + i, &h, sizeof(h));
  }
  return;
#endif
  float_to_half_portable(src, dst, n);
}

bool half_convert_is_hardware() {
#if defined(EDGERT_X86_F16C)
  return cpu_has_f16c();
#elif defined(__aarch64__)
  return true;
#else
  return false;
#endif
}

}  // namespace edgert::detail
