#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/error.hpp"
#include "packet/bytes.hpp"
#include "packet/crc32c.hpp"
#include "packet/format.hpp"
#include "packet/receiver.hpp"
#include "packet/sha256.hpp"
#include "packet/signature.hpp"

namespace edgert::packet {

using detail::fail;

namespace {

using ull = unsigned long long;

size_t trailer_bytes(uint16_t flags) { return kCrcBytes + ((flags & kFlagAuthenticated) ? kMacBytes : 0); }

// Bytes of a format 1 value section of n values.
uint64_t value_section_bytes(uint8_t coding, uint64_t n) {
  switch (coding) {
    case kValueF32: return 4 * n;
    case kValueF16: return 2 * n;
    case kValueQ4Block: return 2 * block_count(n) + (n + 1) / 2;
    case kValueQ8Block: return 2 * block_count(n) + n;
    default: return n;
  }
}

bool known_v1_value_coding(uint8_t c) { return c <= kValueQ8 || c == kValueQ4Block || c == kValueQ8Block; }

// Index of the first non-finite fp16 scale among `blocks`, or `blocks` if all are finite.
uint64_t first_bad_scale(const uint8_t* scales, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b) {
    if ((load_u16(scales + 2 * b) & 0x7C00u) == 0x7C00u) return b;
  }
  return blocks;
}

// Unsigned LEB128, at most 10 bytes, < 2^64, minimal. False on any violation.
bool read_varint(const uint8_t*& cur, uint64_t& remaining, uint64_t* out) {
  uint64_t value = 0;
  for (unsigned i = 0; i < 10; ++i) {
    if (i >= remaining) return false;
    const uint8_t byte = cur[i];
    if (i == 9 && byte > 1) return false;  // bits past 2^64
    value |= static_cast<uint64_t>(byte & 0x7F) << (7 * i);
    if (!(byte & 0x80)) {
      if (i > 0 && byte == 0) return false;  // non-minimal
      cur += i + 1;
      remaining -= i + 1;
      *out = value;
      return true;
    }
  }
  return false;
}

// Formats 2 and 3: the directory (same layout, different coding numbers), format 3's tables,
// then the entropy-coded stream, checked by decoding it once.
edgert_status verify_payload_compact(const uint8_t* cur, uint64_t remaining, const edgert_packet_header& h,
                                     const Manifest& manifest, VerifyScratch* scratch) {
  const size_t n_tensors = manifest.tensors.size();
  const bool rans = h.format_version == kRansFormat;
  const uint8_t sparse_coding = rans ? kIndexGapRans : kIndexGapAc;
  const uint8_t f16_coding = rans ? kValueF16Rans : kValueF16Ac;
  const uint8_t q8_coding = rans ? kValueQ8Rans : kValueQ8Ac;
  const uint8_t q4_block_coding = rans ? kValueQ4BlockRans : kValueQ4BlockAc;
  const uint8_t q8_block_coding = rans ? kValueQ8BlockRans : kValueQ8BlockAc;
  bool uses[kRansTables] = {};
  for (uint32_t e = 0; e < h.tensor_count; ++e) {
    Entry& en = scratch->entries[e];
    uint64_t tid = 0;
    if (!read_varint(cur, remaining, &tid)) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: entry %u tensor id is not a valid varint", e);
    }
    if (tid >= n_tensors) {
      return fail(EDGERT_ERR_PACKET_BAD_TENSOR, "packet: entry %u names tensor id %llu, the model has %zu tensors", e,
                  static_cast<ull>(tid), n_tensors);
    }
    en.tensor_id = static_cast<uint32_t>(tid);
    const TensorDesc& d = manifest.tensors[en.tensor_id];
    if (scratch->seen[en.tensor_id]) {
      return fail(EDGERT_ERR_PACKET_BAD_TENSOR, "packet: tensor %u ('%s') appears twice", en.tensor_id, d.name);
    }
    scratch->seen[en.tensor_id] = 1;
    if (remaining < 3) return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: entry %u runs past the payload", e);
    en.index_coding = cur[0];
    en.value_coding = cur[1];
    en.mode = cur[2];
    en.rice_k = 0;
    cur += 3;
    remaining -= 3;
    const bool known_value = en.value_coding == f16_coding || en.value_coding == q8_coding ||
                             en.value_coding == q4_block_coding || en.value_coding == q8_block_coding;
    if ((en.index_coding != kIndexDense && en.index_coding != sparse_coding) || !known_value || en.mode > kModeSet) {
      return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION,
                  "packet: format %u tensor %u uses index coding %u, value coding %u, mode %u; this decoder knows "
                  "index codings 0 and %u, value codings %s, modes <= %u",
                  h.format_version, en.tensor_id, en.index_coding, en.value_coding, en.mode, sparse_coding,
                  rans ? "5, 6, 11 and 12" : "3, 4, 9 and 10", kModeSet);
    }
    if (!read_varint(cur, remaining, &en.count)) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u coordinate count is not a valid varint",
                  en.tensor_id);
    }
    if (en.count > d.numel) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u updates %llu of %llu elements", en.tensor_id,
                  static_cast<ull>(en.count), static_cast<ull>(d.numel));
    }
    if (en.index_coding == kIndexDense && en.count != d.numel) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: dense tensor %u must update all %llu elements, not %llu",
                  en.tensor_id, static_cast<ull>(d.numel), static_cast<ull>(en.count));
    }
    en.scale = 0.0f;
    if (en.value_coding == q8_coding) {
      if (remaining < 4) return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: entry %u runs past the payload", e);
      en.scale = load_f32(cur);
      cur += 4;
      remaining -= 4;
      if (!std::isfinite(en.scale)) {
        return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u has a non-finite int8 scale", en.tensor_id);
      }
    }
    en.scales = nullptr;
    if (is_block_coding(en.value_coding)) {
      const uint64_t blocks = block_count(en.count);
      if (remaining / 2 < blocks) {
        return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u block scales (%llu) run past the payload",
                    en.tensor_id, static_cast<ull>(blocks));
      }
      if (const uint64_t bad = first_bad_scale(cur, blocks); bad != blocks) {
        return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u block %llu has a non-finite scale", en.tensor_id,
                    static_cast<ull>(bad));
      }
      en.scales = cur;
      cur += 2 * blocks;
      remaining -= 2 * blocks;
    }
    if (h.full_snapshot && (en.index_coding != kIndexDense || en.mode != kModeSet)) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: full snapshot entry for tensor %u is not dense set-mode",
                  en.tensor_id);
    }
    if (en.index_coding == kIndexGapRans) {
      for (unsigned c = 0; c < kGapContexts; ++c) uses[kTableGap + c] = true;
    }
    if (en.value_coding == kValueF16Rans) {
      for (unsigned c = 0; c < kHiContexts; ++c) uses[kTableHi + c] = true;
      uses[kTableLo] = true;
    }
    if (en.value_coding == kValueQ8Rans || en.value_coding == kValueQ4BlockRans || en.value_coding == kValueQ8BlockRans) {
      uses[kTableQ] = true;  // every format 3 q (int8, block int8, block int4 sign-extended) shares the q table
    }
    en.index = nullptr;
    en.index_bytes = 0;
    en.values = nullptr;
    en.value_bytes = 0;
    en.stored_at = kNotStored;
    if (en.index_coding == sparse_coding && en.count <= scratch->index_capacity - scratch->index_used) {
      en.stored_at = scratch->index_used;
      scratch->index_used += en.count;
    }
  }
  scratch->rans_hi_delta = false;
  if (rans && uses[kTableLo]) {  // an FP16_RANS entry: the hi mode byte
    if (remaining < 1) return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: the fp16 hi mode byte runs past the payload");
    if (cur[0] > 1) {
      return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "packet: fp16 hi mode %u, this decoder knows 0 and 1",
                  cur[0]);
    }
    scratch->rans_hi_delta = cur[0] == 1;
    ++cur;
    --remaining;
  }
  if (rans) {
    for (unsigned t = 0; t < kRansTables; ++t) {
      if (uses[t] && !read_rans_table(&cur, &remaining, rans_alphabet(t), &scratch->rans_tables[t])) {
        return fail(EDGERT_ERR_PACKET_MALFORMED,
                    "packet: rANS frequency table %u is malformed (bad varint, zero run past %u symbols or not "
                    "maximal, or frequencies not summing to %u)",
                    t, rans_alphabet(t), kRansTotal);
      }
    }
  }
  scratch->stream = cur;
  scratch->stream_bytes = remaining;
  // Keep the decoded values too when they (and every index) fit, so applying needs no second decode.
  bool keep = scratch->value_store != nullptr;
  uint64_t value_bytes = 0;
  for (uint32_t e = 0; e < h.tensor_count && keep; ++e) {
    Entry& en = scratch->entries[e];
    const uint64_t bytes = en.count * (en.value_coding == f16_coding ? 2 : 1);
    keep = (en.index_coding == kIndexDense || en.stored_at != kNotStored) &&
           bytes <= scratch->value_capacity - value_bytes;
    en.values = scratch->value_store + value_bytes;
    en.value_bytes = bytes;
    value_bytes += keep ? bytes : 0;
  }
  scratch->stream_stored = keep;
  const Entry* entries = scratch->entries;
  uint32_t* stored = scratch->indices;
  auto sink = [&](uint32_t e, const uint32_t* idx, uint64_t first, const uint8_t* raw, size_t n) {
    const Entry& en = entries[e];
    if (idx != nullptr && en.stored_at != kNotStored) {
      std::memcpy(stored + en.stored_at + first, idx, n * sizeof(uint32_t));
    }
    if (keep) {
      const uint64_t size = en.value_coding == f16_coding ? 2 : 1;
      std::memcpy(const_cast<uint8_t*>(en.values) + first * size, raw, n * size);
    }
  };
  if (rans) {
    return decode_stream_v3(entries, h.tensor_count, manifest, cur, remaining, scratch->rans_tables,
                            scratch->rans_hi_delta, sink);
  }
  return decode_stream_v2(entries, h.tensor_count, manifest, cur, remaining, scratch->probs16, scratch->probs8, sink);
}

}  // namespace

edgert_status parse_header(const uint8_t* p, size_t len, edgert_packet_header* out) {
  if (p == nullptr && len > 0) return fail(EDGERT_ERR_INVALID_ARGUMENT, "packet: null data");
  if (len < kPacketHeaderBytes) {
    return fail(EDGERT_ERR_PACKET_TRUNCATED, "packet: %zu bytes, the header alone has %zu", len, kPacketHeaderBytes);
  }
  if (std::memcmp(p, kPacketMagic, 4) != 0) {
    return fail(EDGERT_ERR_PACKET_BAD_MAGIC, "packet: bad magic %02x %02x %02x %02x (expected 'ERTP')", p[0], p[1],
                p[2], p[3]);
  }
  edgert_packet_header h{};
  h.format_version = load_u16(p + 4);
  h.flags = load_u16(p + 6);
  if (h.format_version == 0 || h.format_version > kFormatVersion) {
    return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "packet: format version %u, this decoder reads 1..%u",
                h.format_version, kFormatVersion);
  }
  if (h.flags & ~kKnownFlags) {
    return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "packet: flag bits 0x%04x not known to this decoder",
                static_cast<unsigned>(h.flags & ~kKnownFlags));
  }
  std::memcpy(h.model_id, p + 8, EDGERT_MODEL_ID_BYTES);
  h.base_version = load_u64(p + 40);
  h.target_version = load_u64(p + 48);
  h.tensor_count = load_u32(p + 56);
  const uint32_t reserved = load_u32(p + 60);
  h.payload_length = load_u64(p + 64);
  h.full_snapshot = (h.flags & kFlagFullSnapshot) ? 1 : 0;
  h.authenticated = (h.flags & kFlagAuthenticated) ? 1 : 0;
  // Bytes 60..63: the signature block's length when SIGNED, else reserved (0).
  h.has_signature = (h.flags & kFlagSigned) ? 1 : 0;
  if (h.has_signature) {
    if (reserved < kMinBlockBytes || reserved > kMaxBlockBytes) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: signature block of %u bytes (must be %zu..%zu)", reserved,
                  kMinBlockBytes, kMaxBlockBytes);
    }
    h.signature_length = reserved;
  } else if (reserved != 0) {
    return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "packet: reserved header field is 0x%08x (must be 0)",
                reserved);
  }
  const size_t trailer = trailer_bytes(h.flags) + h.signature_length;
  const size_t room = len - kPacketHeaderBytes;  // >= 0 here
  if (room < trailer || h.payload_length > room - trailer) {
    return fail(EDGERT_ERR_PACKET_TRUNCATED, "packet: %zu bytes, header announces %llu payload + %zu trailer bytes",
                len, static_cast<ull>(h.payload_length), trailer);
  }
  if (h.payload_length != room - trailer) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: %llu bytes after the announced end",
                static_cast<ull>(room - trailer - h.payload_length));
  }
  if (h.target_version <= h.base_version) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: target version %llu is not after base version %llu",
                static_cast<ull>(h.target_version), static_cast<ull>(h.base_version));
  }
  if (out) *out = h;
  return EDGERT_OK;
}

edgert_status verify_packet(const uint8_t* p, size_t len, const Manifest& manifest, uint64_t active_version,
                            const uint8_t* key, size_t key_len, const Trust* trust, Trust* trust_after,
                            VerifyScratch* scratch, edgert_packet_header* header, const Received* received) {
  edgert_packet_header h;
  if (edgert_status st = parse_header(p, len, &h); st != EDGERT_OK) return st;
  const size_t signed_end = kPacketHeaderBytes + static_cast<size_t>(h.payload_length);
  const size_t body = signed_end + h.signature_length;
  const uint32_t crc = crc32c(p, body);
  if (received != nullptr && (received->length != len || received->body_crc != crc)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "packet: the receiver was fed other bytes than this packet");
  }
  if (crc != load_u32(p + body)) return fail(EDGERT_ERR_PACKET_BAD_CRC, "packet: CRC32C mismatch");
  if (key_len > 0) {
    if (!h.authenticated) {
      return fail(EDGERT_ERR_PACKET_MAC_REQUIRED, "packet: the slot has a key but the packet carries no MAC");
    }
    uint8_t tag[kMacBytes];
    if (received != nullptr && received->has_mac) {
      std::memcpy(tag, received->mac, kMacBytes);
    } else {
      hmac_sha256(key, key_len, p, body + kCrcBytes, tag);
    }
    if (!constant_time_equal(tag, p + body + kCrcBytes, kMacBytes)) {
      return fail(EDGERT_ERR_PACKET_BAD_MAC, "packet: HMAC-SHA256 does not verify under the slot key");
    }
  }
  // A block is always checked for structure; without trust it is otherwise ignored (as a MAC without a key).
  SignatureBlock block{};
  if (h.has_signature) {
    if (edgert_status st = parse_signature_block(p + signed_end, h.signature_length, &block); st != EDGERT_OK) {
      return st;
    }
  }
  if (trust != nullptr) {
    if (!h.has_signature) {
      return fail(EDGERT_ERR_PACKET_UNSIGNED, "packet: the slot requires release signatures, the packet has none");
    }
    const uint8_t* digest = received != nullptr && received->has_digest ? received->digest : nullptr;
    if (edgert_status st = verify_signature(p, h.payload_length, block, *trust, trust_after, digest);
        st != EDGERT_OK) {
      return st;
    }
  }
  if (std::memcmp(h.model_id, manifest.model_id, EDGERT_MODEL_ID_BYTES) != 0) {
    return fail(EDGERT_ERR_PACKET_WRONG_MODEL, "packet: model id differs from the slot's model");
  }
  if (std::memcmp(p + 24, manifest.table_hash, kHashBytes) != 0) {
    return fail(EDGERT_ERR_PACKET_WRONG_MODEL, "packet: tensor table hash differs from the slot's manifest");
  }
  if (h.target_version <= active_version) {
    return fail(EDGERT_ERR_PACKET_STALE, "packet: target version %llu is not newer than the active version %llu",
                static_cast<ull>(h.target_version), static_cast<ull>(active_version));
  }
  if (!h.full_snapshot && h.base_version != active_version) {
    return fail(EDGERT_ERR_PACKET_VERSION_MISMATCH, "packet: base version %llu, the active version is %llu",
                static_cast<ull>(h.base_version), static_cast<ull>(active_version));
  }
  const size_t n_tensors = manifest.tensors.size();
  if (h.tensor_count > n_tensors) {
    return fail(EDGERT_ERR_PACKET_BAD_TENSOR, "packet: %u tensor entries, the model has %zu tensors", h.tensor_count,
                n_tensors);
  }
  if (h.full_snapshot && h.tensor_count != n_tensors) {
    return fail(EDGERT_ERR_PACKET_BAD_TENSOR, "packet: full snapshot with %u of the model's %zu tensors",
                h.tensor_count, n_tensors);
  }

  std::memset(scratch->seen, 0, n_tensors);
  scratch->index_used = 0;
  scratch->stream = nullptr;
  scratch->stream_bytes = 0;
  scratch->stream_stored = false;
  if (h.format_version == kCompactFormat || h.format_version == kRansFormat) {
    if (edgert_status st = verify_payload_compact(p + kPacketHeaderBytes, h.payload_length, h, manifest, scratch);
        st != EDGERT_OK) {
      return st;
    }
    if (header) *header = h;
    return EDGERT_OK;
  }
  const uint8_t* cur = p + kPacketHeaderBytes;
  uint64_t remaining = h.payload_length;
  for (uint32_t e = 0; e < h.tensor_count; ++e) {
    if (remaining < kEntryHeaderBytes) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: entry %u header runs past the payload", e);
    }
    Entry& en = scratch->entries[e];
    en.tensor_id = load_u32(cur);
    en.index_coding = cur[4];
    en.value_coding = cur[5];
    en.mode = cur[6];
    en.rice_k = cur[7];
    const uint64_t numel = load_u64(cur + 8);
    en.count = load_u64(cur + 16);
    en.index_bytes = load_u64(cur + 24);
    en.value_bytes = load_u64(cur + 32);
    const uint32_t scale_bits = load_u32(cur + 40);
    en.scale = load_f32(cur + 40);
    const uint32_t reserved = load_u32(cur + 44);
    cur += kEntryHeaderBytes;
    remaining -= kEntryHeaderBytes;

    if (en.tensor_id >= n_tensors) {
      return fail(EDGERT_ERR_PACKET_BAD_TENSOR, "packet: entry %u names tensor id %u, the model has %zu tensors", e,
                  en.tensor_id, n_tensors);
    }
    const TensorDesc& d = manifest.tensors[en.tensor_id];
    if (scratch->seen[en.tensor_id]) {
      return fail(EDGERT_ERR_PACKET_BAD_TENSOR, "packet: tensor %u ('%s') appears twice", en.tensor_id, d.name);
    }
    scratch->seen[en.tensor_id] = 1;
    if (numel != d.numel) {
      return fail(EDGERT_ERR_PACKET_BAD_TENSOR, "packet: tensor %u ('%s') has %llu elements, the packet says %llu",
                  en.tensor_id, d.name, static_cast<ull>(d.numel), static_cast<ull>(numel));
    }
    if (en.index_coding > kIndexRice || !known_v1_value_coding(en.value_coding) || en.mode > kModeSet ||
        reserved != 0) {
      return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION,
                  "packet: tensor %u uses index coding %u, value coding %u, mode %u, reserved 0x%x; "
                  "this decoder knows index codings <= %u, value codings 0-2, 7, 8, modes <= %u, reserved 0",
                  en.tensor_id, en.index_coding, en.value_coding, en.mode, reserved, kIndexRice, kModeSet);
    }
    if (en.count > numel) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u updates %llu of %llu elements", en.tensor_id,
                  static_cast<ull>(en.count), static_cast<ull>(numel));
    }
    if (en.index_coding == kIndexDense) {
      if (en.count != numel || en.index_bytes != 0 || en.rice_k != 0) {
        return fail(EDGERT_ERR_PACKET_MALFORMED,
                    "packet: dense tensor %u must update all %llu elements with no index bytes and k = 0",
                    en.tensor_id, static_cast<ull>(numel));
      }
    } else if (en.rice_k > kMaxRiceParameter) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u Rice parameter %u > %u", en.tensor_id, en.rice_k,
                  kMaxRiceParameter);
    }
    if (en.value_coding == kValueQ8) {
      if (!std::isfinite(en.scale)) {
        return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u has a non-finite int8 scale", en.tensor_id);
      }
    } else if (scale_bits != 0) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u has a scale but no int8 values", en.tensor_id);
    }
    if (h.full_snapshot && (en.index_coding != kIndexDense || en.mode != kModeSet)) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: full snapshot entry for tensor %u is not dense set-mode",
                  en.tensor_id);
    }
    if (en.index_bytes > remaining) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u index section (%llu bytes) runs past the payload",
                  en.tensor_id, static_cast<ull>(en.index_bytes));
    }
    en.index = cur;
    cur += en.index_bytes;
    remaining -= en.index_bytes;
    if (en.value_bytes > remaining) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u value section (%llu bytes) runs past the payload",
                  en.tensor_id, static_cast<ull>(en.value_bytes));
    }
    if (en.value_bytes != value_section_bytes(en.value_coding, en.count)) {
      return fail(EDGERT_ERR_PACKET_MALFORMED,
                  "packet: tensor %u has %llu value bytes, value coding %u needs %llu for %llu values", en.tensor_id,
                  static_cast<ull>(en.value_bytes), en.value_coding,
                  static_cast<ull>(value_section_bytes(en.value_coding, en.count)), static_cast<ull>(en.count));
    }
    en.values = cur;
    en.scales = nullptr;
    if (is_block_coding(en.value_coding)) {
      const uint64_t blocks = block_count(en.count);
      if (const uint64_t bad = first_bad_scale(cur, blocks); bad != blocks) {
        return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u block %llu has a non-finite scale", en.tensor_id,
                    static_cast<ull>(bad));
      }
      if (en.value_coding == kValueQ4Block && (en.count & 1) && (cur[en.value_bytes - 1] >> 4) != 0) {
        return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: tensor %u has a non-zero 4-bit padding nibble",
                    en.tensor_id);
      }
      en.scales = cur;
      en.values = cur + 2 * blocks;  // the q (int8 bytes or packed nibbles)
    }
    cur += en.value_bytes;
    remaining -= en.value_bytes;

    en.stored_at = kNotStored;
    if (en.index_coding == kIndexRice) {
      const bool store = en.count <= scratch->index_capacity - scratch->index_used;
      uint32_t* dst = store ? scratch->indices + scratch->index_used : nullptr;
      edgert_status st = decode_rice(en.index, en.index_bytes, en.rice_k, en.count, numel,
                                     [&](const uint32_t* idx, size_t n) {
                                       if (dst) {
                                         std::memcpy(dst, idx, n * sizeof(uint32_t));
                                         dst += n;
                                       }
                                     });
      if (st != EDGERT_OK) {
        char inner[256];
        std::snprintf(inner, sizeof(inner), "%s", edgert_last_error());
        return fail(st, "packet: tensor %u ('%s'): %s", en.tensor_id, d.name, inner);
      }
      if (store) {
        en.stored_at = scratch->index_used;
        scratch->index_used += en.count;
      }
    }
  }
  if (remaining != 0) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "packet: %llu payload bytes after the last tensor entry",
                static_cast<ull>(remaining));
  }
  if (header) *header = h;
  return EDGERT_OK;
}

}  // namespace edgert::packet

extern "C" uint16_t edgert_packet_max_format(void) { return edgert::packet::kFormatVersion; }

extern "C" edgert_status edgert_packet_inspect(const uint8_t* packet, size_t len, edgert_packet_header* out) {
  if (out == nullptr) return edgert::detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "packet_inspect: null output");
  return edgert::packet::parse_header(packet, len, out);
}
