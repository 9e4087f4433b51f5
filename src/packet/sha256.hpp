// Internal: SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), plus a
// constant-time comparison for MAC tags. Portable C++, no allocation; the one-shot sha256() and
// hmac_sha256() use OpenSSL's accelerated code instead when libedgert links it (EDGERT_WITH_OPENSSL).
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgert::packet {

class Sha256 {
 public:
  static constexpr size_t kDigestBytes = 32;
  static constexpr size_t kBlockBytes = 64;

  Sha256() { reset(); }
  void reset();
  void update(const void* data, size_t len);
  void finish(uint8_t out[kDigestBytes]);

 private:
  void compress(const uint8_t* block);
  uint32_t h_[8];
  uint8_t buf_[kBlockBytes];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

void sha256(const void* data, size_t len, uint8_t out[Sha256::kDigestBytes]);

// HMAC-SHA256 computed incrementally: init(key), update(...)*, finish(tag).
class HmacSha256 {
 public:
  void init(const uint8_t* key, size_t key_len);
  void update(const void* data, size_t len) { inner_.update(data, len); }
  void finish(uint8_t out[Sha256::kDigestBytes]);

 private:
  Sha256 inner_;
  uint8_t opad_key_[Sha256::kBlockBytes];
};

void hmac_sha256(const uint8_t* key, size_t key_len, const void* data, size_t len,
                 uint8_t out[Sha256::kDigestBytes]);

// SHA-256 over data given in pieces on the fastest code linked: OpenSSL's (one context, allocated at
// construction and reused by reset(): no allocation per packet) when libedgert links it, else Sha256.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void reset();
  void update(const void* data, size_t len);
  void finish(uint8_t out[Sha256::kDigestBytes]);  // then reset() before the next message

 private:
  void* evp_ = nullptr;  // EVP_MD_CTX*, null without OpenSSL or when its calls failed (then portable_ is used)
  Sha256 portable_;
};

// Compares n bytes without data-dependent branches or early exit.
bool constant_time_equal(const uint8_t* a, const uint8_t* b, size_t n);

}  // namespace edgert::packet
