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

// Hardware widening quiets a signalling NaN (sets the fp32 quiet bit 22); the
// portable conversion, NumPy and the update-packet slot keep it signalling.
// Clearing bit 22 again for those lanes makes every path bit-identical.
[[maybe_unused]] inline bool is_signalling_nan(uint16_t h) { return (h & 0x7e00u) == 0x7c00u && (h & 0x01ffu) != 0; }

#if defined(EDGERT_X86_F16C)
__attribute__((target("avx,f16c"))) inline __m256 keep_signalling(__m128i h, __m256 f) {
  const __m128i nan_exp = _mm_set1_epi16(0x7e00), snan_exp = _mm_set1_epi16(0x7c00), payload = _mm_set1_epi16(0x01ff);
  const __m128i exp_match = _mm_cmpeq_epi16(_mm_and_si128(h, nan_exp), snan_exp);
  const __m128i no_payload = _mm_cmpeq_epi16(_mm_and_si128(h, payload), _mm_setzero_si128());
  const __m128i snan = _mm_andnot_si128(no_payload, exp_match);
  if (_mm_movemask_epi8(snan) == 0) return f;  // the common case
  const __m128i lo = _mm_unpacklo_epi16(snan, snan), hi = _mm_unpackhi_epi16(snan, snan);
  const __m256 lanes = _mm256_castsi256_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
  const __m256 quiet_bit = _mm256_and_ps(lanes, _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000)));
  return _mm256_andnot_ps(quiet_bit, f);
}

__attribute__((target("avx,f16c"))) void half_to_float_f16c(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, keep_signalling(h, _mm256_cvtph_ps(h)));
  }
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
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
  // __fp16 widening is exact; the loop vectorises to fcvtl (plus the signalling-NaN fix-up).
  for (size_t i = 0; i < n; ++i) {
    __fp16 h;
    std::memcpy(&h, src + i, sizeof(h));
    const float f = static_cast<float>(h);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    bits &= is_signalling_nan(src[i]) ? ~0x00400000u : ~0u;
    std::memcpy(dst + i, &bits, sizeof(bits));
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
