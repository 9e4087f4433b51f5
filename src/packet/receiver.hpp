// Internal: hashing a packet while it arrives (edgert_slot_receiver_*, docs/spec/update-packet.md,
// "Hashing on arrival"). The receiver sees the packet's bytes in order, in pieces of any size, and computes
// what the slot's checks would hash after the last byte: CRC32C of the body, SHA-256 of the signed part (header
// with the authenticated flag cleared, payload) and, with a key, HMAC-SHA256 of body and CRC.
#pragma once

#include <cstddef>
#include <cstdint>

#include "packet/format.hpp"
#include "packet/sha256.hpp"

namespace edgert::packet {

// What a Receiver computed; verify_packet uses it instead of hashing again (see format.hpp).
struct Received {
  uint64_t length = 0;      // bytes fed
  uint32_t body_crc = 0;    // CRC32C of bytes [0, body)
  bool has_digest = false;  // SIGNED: digest holds the signature's SHA-256
  uint8_t digest[Sha256::kDigestBytes] = {0};
  bool has_mac = false;  // AUTHENTICATED and a key: mac holds HMAC-SHA256(key, [0, body + 4))
  uint8_t mac[Sha256::kDigestBytes] = {0};
};

class Receiver {
 public:
  // key: the slot's key at creation (copied; key_len <= kMaxKeyBytes), or none.
  Receiver(const uint8_t* key, size_t key_len);
  void reset();
  void update(const uint8_t* data, size_t len);
  // True (and *out filled) when exactly `len` bytes were fed and they start with a header whose lengths fit
  // them; false otherwise (the slot then hashes the packet itself).
  bool finish(uint64_t len, Received* out);
  uint64_t fed() const { return fed_; }

  static constexpr size_t kMaxKeyBytes = 64;

 private:
  void hash(const uint8_t* data, uint64_t from, uint64_t to);  // absolute offsets of data[0], data[to - from]

  uint8_t key_[kMaxKeyBytes] = {0};
  size_t key_len_ = 0;
  uint8_t opad_[Sha256::kBlockBytes] = {0};
  uint8_t header_[kPacketHeaderBytes] = {0};
  uint64_t fed_ = 0;
  bool parsed_ = false;
  bool bad_ = false;       // lengths that cannot describe a packet: finish() returns false
  bool signed_ = false;
  bool mac_ = false;
  uint64_t signed_end_ = 0;  // header + payload
  uint64_t body_ = 0;        // signed_end_ + signature block
  uint32_t crc_ = 0;
  Sha256Stream digest_;
  Sha256Stream inner_;
};

}  // namespace edgert::packet
