#include "packet/receiver.hpp"

#include <cstring>

#include "packet/bytes.hpp"
#include "packet/crc32c.hpp"

namespace edgert::packet {

Receiver::Receiver(const uint8_t* key, size_t key_len) {
  key_len_ = key != nullptr && key_len <= kMaxKeyBytes ? key_len : 0;
  if (key_len_ > 0) std::memcpy(key_, key, key_len_);
  // HMAC (RFC 2104) with a key of at most one block: inner = H(key ^ ipad || m), outer = H(key ^ opad || inner).
  for (size_t i = 0; i < Sha256::kBlockBytes; ++i) opad_[i] = static_cast<uint8_t>((i < key_len_ ? key_[i] : 0) ^ 0x5c);
  reset();
}

void Receiver::reset() {
  fed_ = 0;
  parsed_ = bad_ = signed_ = mac_ = false;
  signed_end_ = body_ = 0;
  crc_ = 0;
  digest_.reset();
  inner_.reset();
}

void Receiver::hash(const uint8_t* data, uint64_t from, uint64_t to) {
  auto part = [&](uint64_t end) -> size_t {  // bytes of [from, to) below `end`
    return static_cast<size_t>(end <= from ? 0 : (end < to ? end : to) - from);
  };
  if (size_t n = part(body_)) crc_ = crc32c_update(crc_, data, n);
  if (signed_) {
    if (size_t n = part(signed_end_)) digest_.update(data, n);
  }
  if (mac_) {
    if (size_t n = part(body_ + kCrcBytes)) inner_.update(data, n);
  }
}

void Receiver::update(const uint8_t* data, size_t len) {
  if (data == nullptr || len == 0) return;
  if (bad_) {  // counted (the slot compares the count with the packet's length), not hashed
    fed_ += len;
    return;
  }
  if (!parsed_) {
    const size_t missing = kPacketHeaderBytes - static_cast<size_t>(fed_);
    const size_t take = missing < len ? missing : len;
    std::memcpy(header_ + fed_, data, take);
    fed_ += take;
    data += take;
    len -= take;
    if (fed_ < kPacketHeaderBytes) return;
    // Lengths as parse_header reads them; anything it would refuse only needs to not overflow here.
    const uint16_t flags = load_u16(header_ + 6);
    const uint64_t payload = load_u64(header_ + 64);
    const uint64_t block = (flags & kFlagSigned) ? load_u32(header_ + 60) : 0;
    if (payload > (uint64_t{1} << 62)) {
      bad_ = true;
      fed_ += len;
      return;
    }
    parsed_ = true;
    signed_ = (flags & kFlagSigned) != 0;
    mac_ = (flags & kFlagAuthenticated) != 0 && key_len_ > 0;
    signed_end_ = kPacketHeaderBytes + payload;
    body_ = signed_end_ + block;
    if (mac_) {
      uint8_t ipad[Sha256::kBlockBytes];
      for (size_t i = 0; i < Sha256::kBlockBytes; ++i) ipad[i] = static_cast<uint8_t>((i < key_len_ ? key_[i] : 0) ^ 0x36);
      inner_.update(ipad, sizeof(ipad));
    }
    // body_ >= signed_end_ >= the header: all three cover it. CRC and MAC take it as received, the signature
    // with the authenticated flag cleared.
    crc_ = crc32c_update(crc_, header_, kPacketHeaderBytes);
    if (mac_) inner_.update(header_, kPacketHeaderBytes);
    if (signed_) {
      uint8_t h[kPacketHeaderBytes];
      std::memcpy(h, header_, sizeof(h));
      store_u16(h + 6, static_cast<uint16_t>(flags & ~kFlagAuthenticated));
      digest_.update(h, sizeof(h));
    }
  }
  if (len > 0) {
    hash(data, fed_, fed_ + len);
    fed_ += len;
  }
}

bool Receiver::finish(uint64_t len, Received* out) {
  if (!parsed_ || bad_ || fed_ != len || len < body_ + kCrcBytes) return false;
  out->length = fed_;
  out->body_crc = crc_;
  out->has_digest = signed_;
  if (signed_) digest_.finish(out->digest);
  out->has_mac = mac_;
  if (mac_) {
    uint8_t inner[Sha256::kDigestBytes];
    inner_.finish(inner);
    uint8_t outer[Sha256::kBlockBytes + Sha256::kDigestBytes];
    std::memcpy(outer, opad_, Sha256::kBlockBytes);
    std::memcpy(outer + Sha256::kBlockBytes, inner, sizeof(inner));
    sha256(outer, sizeof(outer), out->mac);
  }
  return true;
}

}  // namespace edgert::packet
