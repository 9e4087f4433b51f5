// Internal: flush denormal results to zero on this thread for one scope.
//
// MMNet's denoiser weighs every constellation point by exp(-d^2 / v): at high SNR
// the far points' weights and their products, and the gradients through them, fall
// below 2^-126. Intel cores take a microcode assist on every such result: measured
// on a Sapphire Rapids core, detection ran 3x and a training step 7x slower than
// with flush-to-zero (AMD cores pay little). Values that small change nothing the
// kernels compute at float precision, so the MMNet kernels flush them.
//
// The control register is per thread and belongs to the caller: the guard sets the
// flush bit on construction and restores the previous value on destruction, so it
// goes inside every parallel_for body (each runs on its own thread) and the caller's
// own floating-point environment is unchanged when a kernel returns.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace edgert::detail {

class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  // MXCSR.FTZ (bit 15) only: DAZ (bit 6) is missing on the first x86-64 cores, and once
  // results are flushed no denormal reaches the kernels unless the caller passes one in.
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushToZero); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushToZero = 0x8000u;
  unsigned saved_;
#elif defined(__aarch64__) && defined(__GNUC__)
  // FPCR.FZ (bit 24): denormal inputs and results of single and double precision are zero.
  FlushDenormals() : saved_(read_fpcr()) { write_fpcr(saved_ | kFlushToZero); }
  ~FlushDenormals() { write_fpcr(saved_); }

 private:
  static constexpr uint64_t kFlushToZero = uint64_t{1} << 24;
  static uint64_t read_fpcr() {
    uint64_t value;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(value));
    return value;
  }
  static void write_fpcr(uint64_t value) { __asm__ __volatile__("msr fpcr, %0" : : "r"(value)); }
  uint64_t saved_;
#else
  // Elsewhere denormals keep the platform's default handling (correct, possibly slower).
  FlushDenormals() = default;
#endif

 public:
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

}  // namespace edgert::detail
