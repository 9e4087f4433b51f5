// Internal: the server-side encoder of the range-coded stream of packet format 2
// (docs/spec/update-packet.md, "Format version 2"). The directory (varints, codings,
// scales) stays with the Python encoder, edgert.updates.packet._payload_v2; this is
// the part that costs ~16 binary decisions per value. Bit-exact with the reference
// python/edgert/updates/rangecoder.py (_payload_v2_reference), which tests compare
// against byte for byte.
//
// Self-contained (standard and public headers only): the Python binding includes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgert/edgert.h"

namespace edgert::packet {

// One directory entry as the stream sees it.
struct StreamEntryV2 {
  uint32_t value_bits;     // 16: FP16_AC (fp16 bit patterns), 8: INT8_AC / INT8_BLOCK_AC (two's complement q),
                           // 4: INT4_BLOCK_AC (q & 15, one byte each; 4-bit and 8-bit entries have own models,
                           // all 8-bit entries share one)
  bool sparse;             // GAP_AC: `indices` holds the coordinates; DENSE: count must equal numel
  const uint8_t* symbols;  // count symbols, little-endian (2 bytes each for 16 bits, else 1 byte each)
  uint64_t count;          // coordinates n
  const int64_t* indices;  // sparse: count flat indices, strictly increasing, in [0, numel), gaps < 2^32
  uint64_t numel;          // the tensor's element count
};

// Encodes the stream of `count` entries in directory order (value models shared per
// coding, a fresh gap model per GAP_AC entry) and stores it in *out, replacing its
// content: exactly the bytes the Python reference produces, never fewer than 4
// (`00 00 00 00` when no symbol is coded).
//
// Every entry is validated before anything is coded: value_bits not 4/8/16, a 4-bit symbol > 15, or a null
// symbols/indices pointer with count > 0 (EDGERT_ERR_INVALID_ARGUMENT); DENSE with count != numel
// (EDGERT_ERR_SHAPE); a negative index, an index >= numel, or a gap >= 2^32
// (EDGERT_ERR_INDEX_OUT_OF_RANGE); indices not strictly increasing
// (EDGERT_ERR_INDEX_UNSORTED). Out of memory: EDGERT_ERR_OUT_OF_MEMORY. On any failure
// *out is unchanged and edgert_last_error() says which entry and coordinate.
//
// Allocates the output (grown as needed, reserved from the symbol count) and the
// 65 536 + 256 + 16 contexts once per call, nothing per symbol. Thread-safe (no shared state).
[[nodiscard]] edgert_status encode_stream_v2(const StreamEntryV2* entries, size_t count, std::vector<uint8_t>* out);

}  // namespace edgert::packet
