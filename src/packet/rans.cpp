// Format 3 frequency tables (rans.hpp): parse, check, build the decode table.
#include "packet/rans.hpp"

namespace edgert::packet {

namespace {

// Unsigned LEB128 as in the format 2 directory: at most 10 bytes, < 2^64, minimal.
bool read_varint_u64(const uint8_t** cur, uint64_t* remaining, uint64_t* out) {
  uint64_t value = 0;
  for (unsigned i = 0; i < 10; ++i) {
    if (i >= *remaining) return false;
    const uint8_t byte = (*cur)[i];
    if (i == 9 && byte > 1) return false;
    value |= static_cast<uint64_t>(byte & 0x7F) << (7 * i);
    if (!(byte & 0x80)) {
      if (i > 0 && byte == 0) return false;
      *cur += i + 1;
      *remaining -= i + 1;
      *out = value;
      return true;
    }
  }
  return false;
}

}  // namespace

bool read_rans_table(const uint8_t** cur, uint64_t* remaining, unsigned alphabet, RansTable* out) {
  uint32_t freq[kMaxAlphabet];
  if (alphabet > kMaxAlphabet) return false;
  unsigned sym = 0;
  uint32_t sum = 0;
  bool after_run = false;
  while (sym < alphabet) {
    uint64_t f = 0;
    if (!read_varint_u64(cur, remaining, &f) || f > kRansTotal) return false;
    if (f == 0) {
      if (after_run) return false;  // zero runs are maximal: two in a row have one shorter encoding
      uint64_t more = 0;
      if (!read_varint_u64(cur, remaining, &more) || more >= alphabet - sym) return false;
      for (uint64_t i = 0; i <= more; ++i) freq[sym++] = 0;
      after_run = true;
      continue;
    }
    after_run = false;
    freq[sym++] = static_cast<uint32_t>(f);
    sum += static_cast<uint32_t>(f);
    if (sum > kRansTotal) return false;
  }
  if (sum != kRansTotal) return false;
  uint32_t start = 0;
  for (unsigned s = 0; s < alphabet; ++s) {
    for (uint32_t i = 0; i < freq[s]; ++i) {
      out->step[start + i] = ((freq[s] - 1u) << 12) | i;
      out->symbol[start + i] = static_cast<uint16_t>(s);
    }
    start += freq[s];
  }
  return true;
}

}  // namespace edgert::packet
