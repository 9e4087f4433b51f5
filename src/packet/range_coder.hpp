// Internal: the adaptive binary range coder of packet format 2
// (docs/spec/update-packet.md, "Format version 2"), bit-exact with the reference
// python/edgert/updates/rangecoder.py: the decoder (device side) and the encoder
// (server side, behind encode_stream_v2 in encode_v2.hpp).
//
// Safety on hostile input: every read is bounds-checked; past the end the
// decoder feeds zero bytes and remembers the overrun (reported by the caller
// as MALFORMED), so decoding cost stays bounded by the symbol counts the
// directory announced and no state can leave its range (range never reaches
// 0, all arithmetic is unsigned 32/64-bit).
#pragma once

#include <cstdint>
#include <vector>

namespace edgert::packet {

constexpr unsigned kProbBits = 12;
constexpr uint16_t kProbInit = 1u << (kProbBits - 1);
constexpr unsigned kAdaptShift = 4;
constexpr uint32_t kRangeTop = 1u << 24;
constexpr unsigned kMaxGapBucket = 32;
constexpr uint32_t kTree16Contexts = 1u << 16;  // nodes 1..65535
constexpr uint32_t kTree8Contexts = 1u << 8;    // nodes 1..255
constexpr uint32_t kTree4Contexts = 1u << 4;    // nodes 1..15

class RangeDecoder {
 public:
  // False for a stream shorter than 4 bytes or one starting with the impossible code 0xFFFFFFFF.
  bool init(const uint8_t* data, uint64_t size) {
    data_ = data;
    size_ = size;
    overrun_ = false;
    if (size < 4) return false;
    code_ = (static_cast<uint32_t>(data[0]) << 24) | (static_cast<uint32_t>(data[1]) << 16) |
            (static_cast<uint32_t>(data[2]) << 8) | data[3];
    range_ = 0xFFFFFFFFu;
    pos_ = 4;
    return code_ != 0xFFFFFFFFu;
  }

  unsigned bit(uint16_t* p) {
    // Branch-free: near-uniform bits (fp16 mantissas) would mispredict half the time.
    const uint32_t prob = *p;
    const uint32_t bound = (range_ >> kProbBits) * prob;
    const uint32_t one = code_ >= bound ? 1u : 0u;
    const uint32_t mask = 0u - one;
    code_ -= bound & mask;
    range_ = (bound & ~mask) | ((range_ - bound) & mask);
    const uint32_t up = prob + (((1u << kProbBits) - prob) >> kAdaptShift);
    const uint32_t down = prob - (prob >> kAdaptShift);
    *p = static_cast<uint16_t>((up & ~mask) | (down & mask));
    normalize();
    return one;
  }

  unsigned direct() {
    range_ >>= 1;
    unsigned b = 0;
    if (code_ >= range_) {
      code_ -= range_;
      b = 1;
    }
    normalize();
    return b;
  }

  bool overrun() const { return overrun_; }
  // The stream ended exactly: every byte consumed, none missing, final code 0.
  bool finished() const { return !overrun_ && pos_ == size_ && code_ == 0; }
  uint64_t unread() const { return size_ - pos_; }

 private:
  void normalize() {
    while (range_ < kRangeTop) {
      uint32_t byte = 0;
      if (pos_ < size_) {
        byte = data_[pos_++];
      } else {
        overrun_ = true;
      }
      range_ <<= 8;
      code_ = (code_ << 8) | byte;
    }
  }

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t pos_ = 0;
  uint32_t range_ = 0;
  uint32_t code_ = 0;
  bool overrun_ = false;
};

// The LZMA range encoder (the spec's "Encoder state"). Appends the stream to a
// caller-owned vector, whose growth is its only allocation; the first byte the
// coder emits is always 0 and is dropped (not sent), so the output is exactly
// RangeEncoder.finish() of the Python reference.
class RangeEncoder {
 public:
  explicit RangeEncoder(std::vector<uint8_t>* out) : out_(out) {}

  void bit(uint16_t* p, unsigned b) {
    // Branch-free, as the decoder: fp16 mantissa bits are near-uniform.
    const uint32_t prob = *p;
    const uint32_t bound = (range_ >> kProbBits) * prob;
    const uint32_t mask = 0u - static_cast<uint32_t>(b & 1u);
    low_ += bound & mask;
    range_ = (bound & ~mask) | ((range_ - bound) & mask);
    const uint32_t up = prob + (((1u << kProbBits) - prob) >> kAdaptShift);
    const uint32_t down = prob - (prob >> kAdaptShift);
    *p = static_cast<uint16_t>((up & ~mask) | (down & mask));
    normalize();
  }

  void direct(unsigned b) {
    range_ >>= 1;
    low_ += range_ & (0u - static_cast<uint32_t>(b & 1u));
    normalize();
  }

  // Flushes the coder (five shift_low). False if the dropped first byte was not 0,
  // which the coder's interval arithmetic rules out (an internal error, not bad input).
  [[nodiscard]] bool finish() {
    for (int i = 0; i < 5; ++i) shift_low();
    return first_byte_ == 0;
  }

 private:
  void normalize() {
    while (range_ < kRangeTop) {
      range_ <<= 8;
      shift_low();
    }
  }

  void shift_low() {
    if (low_ < 0xFF000000ull || low_ >= (1ull << 32)) {
      const uint8_t carry = static_cast<uint8_t>(low_ >> 32);
      uint8_t temp = cache_;
      do {
        put(static_cast<uint8_t>(temp + carry));
        temp = 0xFF;
      } while (--cache_size_ != 0);
      cache_ = static_cast<uint8_t>(low_ >> 24);
    }
    ++cache_size_;
    low_ = (low_ & 0x00FFFFFFull) << 8;
  }

  void put(uint8_t byte) {
    if (dropped_first_) {
      out_->push_back(byte);
    } else {
      dropped_first_ = true;
      first_byte_ = byte;
    }
  }

  std::vector<uint8_t>* out_;
  uint64_t low_ = 0;
  uint32_t range_ = 0xFFFFFFFFu;
  uint8_t cache_ = 0;
  uint64_t cache_size_ = 1;  // pending bytes (a run of 0xFF awaiting a carry) can be many
  bool dropped_first_ = false;
  uint8_t first_byte_ = 0;
};

// floor(log2(v)) for v >= 1.
inline unsigned floor_log2(uint64_t v) {
#if defined(__GNUC__)
  return 63u - static_cast<unsigned>(__builtin_clzll(v));
#else
  unsigned n = 0;
  while (v >>= 1) ++n;
  return n;
#endif
}

// Per-entry gap model: adaptive unary bucket, adaptive top mantissa bit, direct rest.
struct GapModel {
  uint16_t unary[kMaxGapBucket + 1];
  uint16_t mantissa[kMaxGapBucket + 1];

  void reset() {
    for (unsigned i = 0; i <= kMaxGapBucket; ++i) unary[i] = mantissa[i] = kProbInit;
  }

  // v = gap + 1, in [1, 2^32] (gaps of 32 bits: the caller checks).
  void encode_v(RangeEncoder& rc, uint64_t v) {
    const unsigned nb = floor_log2(v);
    for (unsigned i = 0; i < nb; ++i) rc.bit(&unary[i], 1);
    if (nb < kMaxGapBucket) rc.bit(&unary[nb], 0);
    if (nb >= 1) {
      rc.bit(&mantissa[nb], static_cast<unsigned>((v >> (nb - 1)) & 1u));
      for (unsigned i = nb - 1; i-- > 0;) rc.direct(static_cast<unsigned>((v >> i) & 1u));
    }
  }

  // v = gap + 1, in [1, 2^33).
  uint64_t decode_v(RangeDecoder& rc) {
    unsigned nb = 0;
    while (nb < kMaxGapBucket && rc.bit(&unary[nb])) ++nb;
    uint64_t v = 1;
    if (nb >= 1) {
      v = (v << 1) | rc.bit(&mantissa[nb]);
      for (unsigned i = 1; i < nb; ++i) v = (v << 1) | rc.direct();
    }
    return v;
  }
};

// A whole `kBits`-bit symbol down a binary tree of adaptive contexts probs[1 .. 2^kBits - 1].
template <unsigned kBits>
inline uint32_t decode_tree(RangeDecoder& rc, uint16_t* probs) {
  uint32_t node = 1;
  for (unsigned i = 0; i < kBits; ++i) node = (node << 1) | rc.bit(&probs[node]);
  return node - (1u << kBits);
}

template <unsigned kBits>
inline void encode_tree(RangeEncoder& rc, uint16_t* probs, uint32_t symbol) {
  uint32_t node = 1;
  for (unsigned i = kBits; i-- > 0;) {
    const unsigned b = (symbol >> i) & 1u;
    rc.bit(&probs[node], b);
    node = (node << 1) | b;
  }
}

inline void reset_probs(uint16_t* probs, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) probs[i] = kProbInit;
}

}  // namespace edgert::packet
