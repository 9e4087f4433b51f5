// The rANS stream of packet format 3 (included by format.hpp): for each directory entry in
// order, per coordinate the gap on state 0 (GAP_RANS entries; table gap[1] after a gap symbol 0,
// else gap[0]), then the value: an fp16 pattern as a ring hit or a hi-byte delta on state 1
// (table hi[hi_context(previous pattern, previous was a hit)]) followed, for a delta, by the lo
// byte on state 2; or the q byte (int8, block int8, or block int4 sign-extended) on state 1.
// Same sink contract as decode_stream_v2.
#pragma once

#include "core/error.hpp"
#include "packet/bytes.hpp"
#include "packet/rans.hpp"

namespace edgert::packet {

// Calls sink(entry_index, indices or nullptr (dense), first coordinate number, raw values, n) on
// chunks; raw values are fp16 patterns (2 bytes, little-endian) or q (1 byte, two's complement; a
// block int4 q outside -8..7 and a literal fp16 pattern that is in the ring are MALFORMED). Entries must
// have passed the directory checks and `tables` the table checks (only the tables the directory
// uses are read). hi_delta: the packet's fp16 hi mode (high bytes as deltas from the previous pattern's).
// Any stream error is MALFORMED (sink may have seen a prefix).
template <typename Sink>
edgert_status decode_stream_v3(const Entry* entries, uint32_t count, const Manifest& manifest, const uint8_t* stream,
                               uint64_t stream_bytes, const RansTable* tables, bool hi_delta, Sink&& sink) {
  using detail::fail;
  using ull = unsigned long long;
  RansDecoder rc;
  if (!rc.init(stream, stream_bytes)) {
    return fail(EDGERT_ERR_PACKET_MALFORMED,
                "packet: rANS stream of %llu bytes (needs >= %zu, every initial state >= 2^16)",
                static_cast<ull>(stream_bytes), kRansStateBytes);
  }
  constexpr size_t kChunk = 1024;
  uint32_t idx[kChunk];
  uint8_t raw[2 * kChunk];
  const RansTable* gap = tables + kTableGap;
  const RansTable* hi = tables + kTableHi;
  const RansTable& lo = tables[kTableLo];
  const RansTable& q = tables[kTableQ];
  for (uint32_t e = 0; e < count; ++e) {
    const Entry& en = entries[e];
    const uint64_t numel = manifest.tensors[en.tensor_id].numel;
    const bool sparse = en.index_coding == kIndexGapRans;
    const bool fp16 = en.value_coding == kValueF16Rans;
    const bool q4 = en.value_coding == kValueQ4BlockRans;
    uint64_t next = 0;  // smallest admissible index
    uint64_t first = 0;
    unsigned gap_ctx = 0;
    uint16_t ring[kRing];
    for (unsigned k = 0; k < kRing; ++k) ring[k] = kRingInit[k];
    uint32_t pattern = 0;  // the previous fp16 pattern of the entry
    bool hit = false;
    size_t filled = 0;
    for (uint64_t t = 0; t < en.count; ++t) {
      if (sparse) {
        const unsigned s = rc.symbol<0>(gap[gap_ctx]);
        gap_ctx = s == 0;
        uint64_t v = s + 1u;
        if (s >= kGapDirect) {  // escape: v in [2^nb, 2^(nb+1)), nb bits below the leading one follow
          const unsigned nb = s - kGapDirect + kGapMinBucket;
          v = 1;
          unsigned left = nb;
          unsigned chunk = nb - kRawChunkBits * ((nb - 1) / kRawChunkBits);  // most significant chunk first
          while (left) {
            v = (v << chunk) | rc.raw<0>(chunk);
            left -= chunk;
            chunk = kRawChunkBits;
          }
        }
        const uint64_t index = next + (v - 1);
        if (index >= numel) {
          return fail(EDGERT_ERR_PACKET_MALFORMED,
                      "packet: tensor %u coordinate %llu decodes to index %llu, out of range [0, %llu)",
                      en.tensor_id, static_cast<ull>(t), static_cast<ull>(index), static_cast<ull>(numel));
        }
        idx[filled] = static_cast<uint32_t>(index);
        next = index + 1;
      }
      if (fp16) {
        const unsigned s = rc.symbol<1>(hi[hi_context(pattern, hit)]);
        hit = s >= 256u;
        unsigned k = kRing - 1;  // the ring slot that moves to the front
        if (hit) {
          k = s - 256u;
          pattern = ring[k];
        } else {
          const unsigned l = rc.symbol<2>(lo);
          pattern = ((((hi_delta ? pattern >> 8 : 0u) + s) & 0xFFu) << 8) | l;
          if (pattern == ring[0] || pattern == ring[1] || pattern == ring[2] || pattern == ring[3]) {
            return fail(EDGERT_ERR_PACKET_MALFORMED,
                        "packet: tensor %u coordinate %llu codes fp16 pattern 0x%04x literally, but it is in the ring",
                        en.tensor_id, static_cast<ull>(t), pattern);
          }
        }
        for (; k > 0; --k) ring[k] = ring[k - 1];
        ring[0] = static_cast<uint16_t>(pattern);
        raw[2 * filled] = static_cast<uint8_t>(pattern);
        raw[2 * filled + 1] = static_cast<uint8_t>(pattern >> 8);
      } else {
        const unsigned s = rc.symbol<1>(q);
        if (q4 && s >= 8u && s < 248u) {  // int4 q is -8..7: bytes 0..7 and 248..255
          return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u coordinate %llu has 4-bit q byte 0x%02x",
                      en.tensor_id, static_cast<ull>(t), s);
        }
        raw[filled] = static_cast<uint8_t>(s);
      }
      if (++filled == kChunk) {
        if (rc.overrun()) break;
        sink(e, sparse ? idx : nullptr, first, static_cast<const uint8_t*>(raw), filled);
        first += filled;
        filled = 0;
      }
    }
    if (rc.overrun()) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: rANS stream runs past its %llu bytes (tensor %u)",
                  static_cast<ull>(stream_bytes), en.tensor_id);
    }
    if (filled) sink(e, sparse ? idx : nullptr, first, static_cast<const uint8_t*>(raw), filled);
  }
  if (!rc.finished()) {
    if (rc.unread()) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: %llu rANS stream bytes after the last symbol",
                  static_cast<ull>(rc.unread()));
    }
    return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: rANS stream does not end in the initial states");
  }
  return EDGERT_OK;
}

}  // namespace edgert::packet
