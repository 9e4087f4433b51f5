// Golomb-Rice gap decoder (included by format.hpp). Bits are consumed
// LSB-first from each byte; a gap g = (q << k) | r is q one-bits, a zero bit,
// then r in k bits (LSB first). Indices are i_j = i_{j-1} + 1 + g_j, i_{-1} = -1.
#pragma once

#include "core/error.hpp"
#include "packet/bytes.hpp"

namespace edgert::packet {
namespace rice_detail {

inline unsigned count_trailing_zeros(uint64_t x) {  // x != 0
#if defined(__GNUC__) || defined(__clang__)
  return static_cast<unsigned>(__builtin_ctzll(x));
#else
  unsigned n = 0;
  while ((x & 1u) == 0) {
    x >>= 1;
    ++n;
  }
  return n;
#endif
}

// At least 57 valid bits starting at bit `pos` (zeros past the end of data).
inline uint64_t peek(const uint8_t* data, uint64_t nbytes, uint64_t pos) {
  const uint64_t byte = pos >> 3;
  uint64_t w = 0;
  if (byte + 8 <= nbytes) {
    w = load_u64(data + byte);
  } else {
    for (uint64_t i = 0; byte + i < nbytes; ++i) w |= static_cast<uint64_t>(data[byte + i]) << (8 * i);
  }
  return w >> (pos & 7u);
}

}  // namespace rice_detail

template <typename Sink>
edgert_status decode_rice(const uint8_t* data, uint64_t nbytes, unsigned k, uint64_t count, uint64_t numel,
                          Sink&& sink) {
  using detail::fail;
  constexpr size_t kChunk = 1024;
  uint32_t chunk[kChunk];
  size_t filled = 0;
  if (nbytes > (~0ull >> 3)) return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: index section too long");
  const uint64_t nbits = nbytes * 8;
  const uint64_t max_q = numel >> k;  // any larger quotient leaves the tensor
  const uint64_t rmask = (1ull << k) - 1ull;
  uint64_t pos = 0;
  uint64_t next = 0;  // smallest admissible index
  for (uint64_t j = 0; j < count; ++j) {
    uint64_t q = 0;
    for (;;) {
      const uint64_t w = rice_detail::peek(data, nbytes, pos);
      const unsigned ones = ~w == 0 ? 64u : rice_detail::count_trailing_zeros(~w);
      if (ones >= 57) {
        q += 56;
        pos += 56;
        if (pos > nbits) return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: index %llu runs past the section",
                                     static_cast<unsigned long long>(j));
        if (q > max_q) return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: index %llu is out of range [0, %llu)",
                                   static_cast<unsigned long long>(j), static_cast<unsigned long long>(numel));
        continue;
      }
      q += ones;
      pos += ones + 1u;
      break;
    }
    if (q > max_q) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: index %llu is out of range [0, %llu)",
                  static_cast<unsigned long long>(j), static_cast<unsigned long long>(numel));
    }
    const uint64_t r = k ? rice_detail::peek(data, nbytes, pos) & rmask : 0;
    pos += k;
    if (pos > nbits) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: index %llu runs past the section (%llu bytes)",
                  static_cast<unsigned long long>(j), static_cast<unsigned long long>(nbytes));
    }
    const uint64_t index = next + ((q << k) | r);
    if (index >= numel) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: index %llu decodes to %llu, out of range [0, %llu)",
                  static_cast<unsigned long long>(j), static_cast<unsigned long long>(index),
                  static_cast<unsigned long long>(numel));
    }
    next = index + 1;
    chunk[filled++] = static_cast<uint32_t>(index);
    if (filled == kChunk) {
      sink(static_cast<const uint32_t*>(chunk), filled);
      filled = 0;
    }
  }
  if (filled) sink(static_cast<const uint32_t*>(chunk), filled);
  // Canonical form: exactly ceil(bits / 8) bytes, padding bits zero.
  if ((pos + 7) / 8 != nbytes) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: %llu index bytes for %llu coded bits (expected %llu)",
                static_cast<unsigned long long>(nbytes), static_cast<unsigned long long>(pos),
                static_cast<unsigned long long>((pos + 7) / 8));
  }
  if ((pos & 7u) && (data[nbytes - 1] >> (pos & 7u)) != 0) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "rice: non-zero padding bits after the last index");
  }
  return EDGERT_OK;
}

}  // namespace edgert::packet
