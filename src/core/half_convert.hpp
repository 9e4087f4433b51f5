// Internal: fp16 <-> fp32 conversion of whole arrays, using F16C (x86-64,
// chosen at run time) or the NEON/__fp16 instructions (aarch64), and the
// portable routines of half.hpp otherwise. Results are bit-identical on every
// path for every input: exact widening (a signalling NaN stays signalling, as
// in the portable code), round-to-nearest-even narrowing (NaNs come out quiet
// with the payload's top bits, on every path).
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgert::detail {

// dst[i] = float(src[i]) for i < n.
void half_to_float_n(const uint16_t* src, float* dst, size_t n);

// dst[i] = half(src[i]) (round to nearest even) for i < n.
void float_to_half_n(const float* src, uint16_t* dst, size_t n);

// True when the hardware conversion path is in use (for diagnostics and tests).
bool half_convert_is_hardware();

}  // namespace edgert::detail
