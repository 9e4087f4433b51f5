// Internal: constants and parsed views of the manifest and update-packet
// formats (docs/spec/update-packet.md). Everything on the wire is little-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgert/edgert.h"
#include "packet/rans.hpp"

namespace edgert::packet {

constexpr uint8_t kManifestMagic[4] = {'E', 'R', 'T', 'M'};
constexpr uint8_t kPacketMagic[4] = {'E', 'R', 'T', 'P'};
constexpr uint8_t kSnapshotFileMagic[4] = {'E', 'R', 'T', 'S'};

// The newest packet format this decoder understands; it accepts 1..kFormatVersion.
// Manifests and snapshot files are still at version 1 (kContainerVersion).
constexpr uint16_t kFormatVersion = 3;
constexpr uint16_t kCompactFormat = 2;  // varint directory + one range-coded stream
constexpr uint16_t kRansFormat = 3;     // varint directory + static tables + one rANS stream
constexpr uint16_t kContainerVersion = 1;

constexpr size_t kManifestHeaderBytes = 44;  // magic .. tensor_count
constexpr size_t kPacketHeaderBytes = 72;
constexpr size_t kEntryHeaderBytes = 48;
constexpr size_t kCrcBytes = 4;
constexpr size_t kMacBytes = 32;
constexpr size_t kHashBytes = 16;  // truncated SHA-256 of the tensor table
constexpr size_t kSnapshotFileHeaderBytes = 56;

enum PacketFlags : uint16_t {
  kFlagAuthenticated = 1u << 0,
  kFlagFullSnapshot = 1u << 1,
  kFlagSigned = 1u << 2,  // release signature block before the CRC; header bytes 60..63 hold its length
  kKnownFlags = kFlagAuthenticated | kFlagFullSnapshot | kFlagSigned,
};
enum IndexCoding : uint8_t { kIndexDense = 0, kIndexRice = 1, kIndexGapAc = 2, kIndexGapRans = 3 };
// One id space for all formats; each format accepts only its own ids.
// 0..2: format 1 raw values; 3..4: format 2 range-coded fp16 patterns / int8 q; 5..6: the same, format 3 rANS.
// 7..8: format 1 block-scaled q (4-bit packed nibbles / int8, one fp16 scale per kQuantBlock values);
// 9..10: the same q range-coded in format 2 (scales in the directory); 11..12: rANS-coded in format 3.
enum ValueCoding : uint8_t {
  kValueF16 = 0,
  kValueF32 = 1,
  kValueQ8 = 2,
  kValueF16Ac = 3,
  kValueQ8Ac = 4,
  kValueF16Rans = 5,
  kValueQ8Rans = 6,
  kValueQ4Block = 7,
  kValueQ8Block = 8,
  kValueQ4BlockAc = 9,
  kValueQ8BlockAc = 10,
  kValueQ4BlockRans = 11,
  kValueQ8BlockRans = 12,
};
constexpr uint64_t kQuantBlock = 64;  // values per fp16 scale of the block codings
inline bool is_block_coding(uint8_t c) { return c >= kValueQ4Block && c <= kValueQ8BlockRans; }
inline uint64_t block_count(uint64_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }
enum PatchMode : uint8_t { kModeAdd = 0, kModeSet = 1 };

constexpr uint32_t kMaxTensors = 1u << 16;
constexpr size_t kMaxNameBytes = 127;
constexpr uint64_t kMaxTensorNumel = 0xFFFFFFFFull;  // indices fit in 32 bits
constexpr uint64_t kMaxWeightsBytes = 1ull << 40;
constexpr unsigned kMaxRiceParameter = 31;
constexpr uint64_t kTensorAlignment = 64;  // byte alignment of each tensor in the slot buffer

struct TensorDesc {
  char name[kMaxNameBytes + 1];
  edgert_dtype dtype;  // F32 or F16
  int32_t ndim;
  int64_t shape[EDGERT_MAX_DIMS];
  uint64_t numel;
  uint64_t elem_bytes;
  uint64_t offset;  // in the slot's weight buffer
  uint64_t bytes;
};

struct Manifest {
  uint8_t model_id[EDGERT_MODEL_ID_BYTES];
  uint8_t table_hash[kHashBytes];
  std::vector<TensorDesc> tensors;
  uint64_t weights_bytes = 0;  // padded total
};

// Parses and fully checks a serialized manifest (allocates: called once per slot).
edgert_status parse_manifest(const uint8_t* data, size_t len, Manifest* out);

// One verified tensor entry of a packet (pointers into the packet bytes).
struct Entry {
  uint32_t tensor_id;
  uint8_t index_coding, value_coding, mode, rice_k;
  uint64_t count;
  const uint8_t* index;
  uint64_t index_bytes;
  const uint8_t* values;
  uint64_t value_bytes;
  float scale;
  const uint8_t* scales;  // block codings: block_count(count) fp16 scales (little-endian); else null
  uint64_t stored_at;  // offset of the decoded indices in the scratch, or kNotStored
};
constexpr uint64_t kNotStored = ~0ull;

// Caller-owned working memory for verify_packet (owned by the slot: no
// allocation per packet). entries/seen hold manifest.tensors.size() items.
struct VerifyScratch {
  Entry* entries;
  uint8_t* seen;
  uint32_t* indices;  // decoded sparse indices are kept here when they fit
  uint64_t index_capacity;
  uint64_t index_used;
  uint16_t* probs16;  // format 2 model state: kTree16Contexts and kTree8Contexts entries
  uint16_t* probs8;
  RansTable* rans_tables;  // format 3: kRansTables decode tables
  uint8_t* value_store = nullptr;  // format 2: decoded raw values are kept here when all of them fit
  uint64_t value_capacity = 0;     // bytes
  const uint8_t* stream = nullptr;  // out (formats 2, 3): the entropy-coded stream
  uint64_t stream_bytes = 0;
  bool stream_stored = false;  // out (format 2): every index and value is in the scratch (no second decode)
  bool rans_hi_delta = false;  // out (format 3): the packet's fp16 hi mode byte is 1 (high-byte deltas)
};

// Header checks shared by inspect and verify: truncation, magic, format
// version, flags, reserved fields, version order, lengths.
edgert_status parse_header(const uint8_t* p, size_t len, edgert_packet_header* out);

struct Trust;
struct Received;

// Verifies everything (see docs/spec/update-packet.md, "Decoder checks") against
// the manifest, the active version, the key and (when trust is non-null) the
// pinned release keys; writes no weights. With trust, *trust_after receives the
// trust to keep once the packet is applied (rotated root, raised delegation floor).
// `received` (or null): what a Receiver hashed while these bytes arrived; its SHA-256 and HMAC replace the
// slot's own, after its CRC32C of the body matched the one computed here (else INVALID_ARGUMENT: the
// receiver saw other bytes), so the checks after the last byte cost the CRC and the Ed25519 verification.
edgert_status verify_packet(const uint8_t* p, size_t len, const Manifest& manifest, uint64_t active_version,
                            const uint8_t* key, size_t key_len, const Trust* trust, Trust* trust_after,
                            VerifyScratch* scratch, edgert_packet_header* header,
                            const Received* received = nullptr);

// Decodes `count` Golomb-Rice coded gaps (LSB-first bit order) into absolute
// indices < numel, calling sink(indices, n) on chunks. Returns MALFORMED on any
// overrun, out-of-range index or non-canonical padding, and then `sink` may
// have seen a prefix of the indices.
template <typename Sink>
edgert_status decode_rice(const uint8_t* data, uint64_t nbytes, unsigned k, uint64_t count, uint64_t numel,
                          Sink&& sink);

}  // namespace edgert::packet

#include "packet/rice.inl"
#include "packet/stream_v2.inl"
#include "packet/stream_v3.inl"
