// Internal: release signatures of update packets (docs/spec/update-packet.md,
// "Release signatures"): the signature block's layout, its structural parse
// (always, bounds-checked: the block is network-facing) and its verification
// against a slot's pinned trust (Ed25519 through OpenSSL 3's EVP, compiled in
// with EDGERT_SIGNATURES).
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgert/edgert.h"

namespace edgert::packet {

constexpr size_t kPublicKeyBytes = 32;
constexpr size_t kSignatureBytes = 64;
constexpr size_t kKeyIdBytes = 8;
constexpr size_t kStatementBytes = 128;
constexpr size_t kPacketSignatureBytes = 80;
constexpr size_t kBlockHeaderBytes = 8;
constexpr unsigned kMaxRotations = 16;
constexpr uint8_t kBlockVersion = 1;
constexpr uint8_t kKindRoot = 1;
constexpr uint8_t kKindRelease = 2;

constexpr size_t block_bytes(unsigned rotations) {
  return kBlockHeaderBytes + kStatementBytes * (rotations + 1) + kPacketSignatureBytes;
}
constexpr size_t kMinBlockBytes = block_bytes(0);
constexpr size_t kMaxBlockBytes = block_bytes(kMaxRotations);

// What the device trusts now: the root key and version, and the lowest
// delegation version it still accepts.
struct TrustState {
  uint8_t root_key[kPublicKeyBytes];
  uint64_t root_version;
  uint64_t min_release_version;
};

// A slot's trust: the state, the clock, and the last delegation verified under
// the current root (its signature is not checked again while it is repeated).
struct Trust {
  TrustState state;
  uint64_t fixed_time;  // 0: wall clock
  bool cached = false;
  uint8_t cached_delegation[kStatementBytes];
};

// A parsed (structurally checked) block: pointers into the packet.
struct SignatureBlock {
  unsigned rotations;
  const uint8_t* statements;  // rotations + 1 statements, the delegation last
  const uint8_t* signer_id;
  uint64_t expiry;
  const uint8_t* signature;
};

// Structural checks: magic, block version, reserved bytes, length = block_bytes(count),
// statement magics, kinds and reserved bytes, rotation order. MALFORMED /
// UNSUPPORTED_VERSION on failure.
edgert_status parse_signature_block(const uint8_t* block, size_t len, SignatureBlock* out);

// Verifies a parsed block of the packet p (header + payload_len payload bytes)
// against trust (see the spec for the order of checks and their statuses);
// on success *after is the trust to keep once the packet is applied (rotated
// root, raised delegation floor, this delegation cached). `digest`: the packet's SHA-256 (header with the
// authenticated flag cleared, payload) when already computed (a Receiver), else null (hashed here).
edgert_status verify_signature(const uint8_t* p, uint64_t payload_len, const SignatureBlock& block,
                               const Trust& trust, Trust* after, const uint8_t* digest = nullptr);

// True when Ed25519 verification is compiled in (EDGERT_SIGNATURES).
bool signatures_available();
const char* signatures_backend();  // "sodium", "openssl" or ""

}  // namespace edgert::packet
