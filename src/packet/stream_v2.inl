// The range-coded stream of packet format 2 (included by format.hpp): for
// each directory entry in order, per coordinate the gap (GAP_AC entries) and
// the value symbol. Used twice per packet: verify_packet decodes it to check
// it (and keep the indices), the slot decodes it again while applying.
#pragma once

#include "core/error.hpp"
#include "packet/bytes.hpp"
#include "packet/range_coder.hpp"

namespace edgert::packet {

// Calls sink(entry_index, indices or nullptr (dense), first coordinate number, raw values, n) on
// chunks; raw values are fp16 patterns (2 bytes, little-endian) or q (1 byte, two's complement; the
// 4-bit q of INT4 blocks sign-extended). The 4-bit model lives on the stack. Entries must
// have passed the directory checks. Any stream error is MALFORMED (sink may have seen a prefix).
template <typename Sink>
edgert_status decode_stream_v2(const Entry* entries, uint32_t count, const Manifest& manifest, const uint8_t* stream,
                               uint64_t stream_bytes, uint16_t* probs16, uint16_t* probs8, Sink&& sink) {
  using detail::fail;
  using ull = unsigned long long;
  RangeDecoder rc;
  if (!rc.init(stream, stream_bytes)) {
    return fail(EDGERT_ERR_PACKET_MALFORMED,
                "packet: range-coded stream of %llu bytes (needs >= 4, not starting with ff ff ff ff)",
                static_cast<ull>(stream_bytes));
  }
  reset_probs(probs16, kTree16Contexts);
  reset_probs(probs8, kTree8Contexts);
  uint16_t probs4[kTree4Contexts];
  reset_probs(probs4, kTree4Contexts);
  constexpr size_t kChunk = 1024;
  uint32_t idx[kChunk];
  uint8_t raw[2 * kChunk];
  GapModel gaps;
  for (uint32_t e = 0; e < count; ++e) {
    const Entry& en = entries[e];
    const uint64_t numel = manifest.tensors[en.tensor_id].numel;
    const bool sparse = en.index_coding == kIndexGapAc;
    const bool fp16 = en.value_coding == kValueF16Ac;
    const bool q4 = en.value_coding == kValueQ4BlockAc;
    gaps.reset();
    uint64_t next = 0;  // smallest admissible index
    uint64_t first = 0;
    size_t filled = 0;
    for (uint64_t t = 0; t < en.count; ++t) {
      if (sparse) {
        const uint64_t index = next + (gaps.decode_v(rc) - 1);
        if (index >= numel) {
          return fail(EDGERT_ERR_PACKET_MALFORMED,
                      "packet: tensor %u coordinate %llu decodes to index %llu, out of range [0, %llu)",
                      en.tensor_id, static_cast<ull>(t), static_cast<ull>(index), static_cast<ull>(numel));
        }
        idx[filled] = static_cast<uint32_t>(index);
        next = index + 1;
      }
      if (fp16) {
        store_u16(raw + 2 * filled, static_cast<uint16_t>(decode_tree<16>(rc, probs16)));
      } else if (q4) {
        const uint32_t nibble = decode_tree<4>(rc, probs4);
        raw[filled] = static_cast<uint8_t>(nibble >= 8 ? nibble + 0xF0u : nibble);
      } else {
        raw[filled] = static_cast<uint8_t>(decode_tree<8>(rc, probs8));
      }
      if (++filled == kChunk) {
        if (rc.overrun()) break;
        sink(e, sparse ? idx : nullptr, first, static_cast<const uint8_t*>(raw), filled);
        first += filled;
        filled = 0;
      }
    }
    if (rc.overrun()) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: range-coded stream runs past its %llu bytes (tensor %u)",
                  static_cast<ull>(stream_bytes), en.tensor_id);
    }
    if (filled) sink(e, sparse ? idx : nullptr, first, static_cast<const uint8_t*>(raw), filled);
  }
  if (!rc.finished()) {
    if (rc.unread()) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: %llu range-coded bytes after the last symbol",
                  static_cast<ull>(rc.unread()));
    }
    return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: range-coded stream does not end on its final interval");
  }
  return EDGERT_OK;
}

}  // namespace edgert::packet
