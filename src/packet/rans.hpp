// Internal: the static-table rANS coder of packet format 3
// (docs/spec/update-packet.md, "Format version 3"): frequency tables sent in the
// packet, three interleaved 32-bit states, 16-bit renormalisation. Decoding a
// symbol is one table load, one multiply and at most one 16-bit read, with no
// model update, which is what makes format 3 ~10x cheaper to decode than the
// adaptive binary coder of format 2.
//
// Safety on hostile input: tables are checked (exact sum, canonical zero runs)
// before use; every read is bounds-checked (past the end the decoder feeds zeros
// and remembers the overrun, reported by the caller as MALFORMED); states stay in
// [2^4, 2^32) by construction, so no arithmetic can overflow or stall.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "packet/bytes.hpp"

namespace edgert::packet {

constexpr unsigned kRansPrecision = 12;                   // frequencies sum to 2^12
constexpr uint32_t kRansTotal = 1u << kRansPrecision;     // 4096
constexpr uint32_t kRansLow = 1u << 16;                   // states live in [2^16, 2^32)
constexpr unsigned kRansStates = 3;                       // 0: gaps, 1: hi byte / int8 q, 2: lo byte
constexpr size_t kRansStateBytes = 4 * kRansStates;       // the stream starts with the 3 states
constexpr unsigned kGapDirect = 63;                       // gap symbols 0..62: v = symbol + 1
constexpr unsigned kGapMinBucket = 6;                     // symbols 63..89: v in [2^nb, 2^(nb+1)), nb = symbol - 57
constexpr unsigned kGapAlphabet = kGapDirect + (32 - kGapMinBucket + 1);  // 90
constexpr unsigned kRawChunkBits = 12;                    // escape bits are coded 12 at a time at most
constexpr unsigned kGapContexts = 2;                      // gap[1] after a gap symbol 0 in the entry, else gap[0]
constexpr unsigned kHiContexts = 8;                       // 4 x (previous was a ring hit) + min(3, exponent >> 2)
constexpr unsigned kRing = 4;                             // fp16 patterns remembered per entry (move to front)
constexpr uint16_t kRingInit[kRing] = {0x0000, 0x8000, 0x0001, 0x8001};  // distinct
constexpr unsigned kHiAlphabet = 256 + kRing;             // hi-byte deltas, then ring hits 256..259
constexpr unsigned kMaxAlphabet = kHiAlphabet;
// Tables in stream order: gap[0..1], hi[0..7], lo, q.
constexpr unsigned kTableGap = 0, kTableHi = kTableGap + kGapContexts, kTableLo = kTableHi + kHiContexts,
                   kTableQ = kTableLo + 1;
constexpr unsigned kRansTables = kTableQ + 1;  // 12

// One decode table, indexed by slot = x mod 4096: the symbol, and (freq - 1) << 12 | (slot - start)
// (two independent loads per symbol; 24 KiB).
struct RansTable {
  uint32_t step[kRansTotal];
  uint16_t symbol[kRansTotal];
};

inline unsigned rans_alphabet(unsigned table) {
  return table < kTableHi ? kGapAlphabet : table < kTableLo ? kHiAlphabet : 256u;
}

// The hi table of an fp16 coordinate after pattern `previous`, coded as a ring hit or not.
inline unsigned hi_context(uint32_t previous, bool hit) {
  const unsigned e = ((previous >> 10) & 31u) >> 2;
  return (hit ? 4u : 0u) + (e < 3u ? e : 3u);
}

// Reads one serialized frequency table (the spec's "Tables") at cur and fills `out`.
// False on a bad varint, a run past the alphabet, a non-maximal zero run, a frequency
// above 4096 or a sum other than 4096; *cur/*remaining advance past the table on success.
bool read_rans_table(const uint8_t** cur, uint64_t* remaining, unsigned alphabet, RansTable* out);

class RansDecoder {
 public:
  // False for a stream shorter than the states or a state outside [2^16, 2^32).
  bool init(const uint8_t* data, uint64_t size) {
    data_ = data;
    size_ = size;
    pos_ = kRansStateBytes;
    overrun_ = false;
    if (size < kRansStateBytes) return false;
    for (unsigned i = 0; i < kRansStates; ++i) {
      x_[i] = load_u32(data + 4 * i);
      if (x_[i] < kRansLow) return false;
    }
    return true;
  }

  template <unsigned kState>
  unsigned symbol(const RansTable& t) {
    uint32_t x = x_[kState];
    const uint32_t slot = x & (kRansTotal - 1);
    const uint32_t e = t.step[slot];
    x = ((e >> 12) + 1u) * (x >> kRansPrecision) + (e & 0xFFFu);
    x_[kState] = renorm(x);
    return t.symbol[slot];
  }

  // `bits` (1..12) uniform bits: the symbol r with frequency 2^(12 - bits), start r << (12 - bits).
  template <unsigned kState>
  uint32_t raw(unsigned bits) {
    uint32_t x = x_[kState];
    const unsigned shift = kRansPrecision - bits;
    const uint32_t slot = x & (kRansTotal - 1);
    x = ((x >> kRansPrecision) << shift) + (slot & ((1u << shift) - 1u));
    x_[kState] = renorm(x);
    return slot >> shift;
  }

  bool overrun() const { return overrun_; }
  // Every word consumed, none missing, and each state back at the encoder's initial 2^16.
  bool finished() const {
    if (overrun_ || pos_ != size_) return false;
    for (unsigned i = 0; i < kRansStates; ++i) {
      if (x_[i] != kRansLow) return false;
    }
    return true;
  }
  uint64_t unread() const { return size_ > pos_ ? size_ - pos_ : 0; }

 private:
  uint32_t renorm(uint32_t x) {
    if (x < kRansLow) {  // x >= 2^4 here, so one 16-bit word restores x >= 2^16
      uint32_t word = 0;
      if (pos_ + 2 <= size_) {
        word = load_u16(data_ + pos_);
        pos_ += 2;
      } else {
        overrun_ = true;
      }
      x = (x << 16) | word;
    }
    return x;
  }

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t pos_ = 0;
  uint32_t x_[kRansStates] = {};
  bool overrun_ = false;
};

}  // namespace edgert::packet
