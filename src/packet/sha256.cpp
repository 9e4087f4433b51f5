#include "packet/sha256.hpp"

#include "core/error.hpp"
#include "edgert/edgert.h"

#include <cstring>

#if defined(EDGERT_WITH_OPENSSL)
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif

namespace edgert::packet {
namespace {

constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
inline uint32_t load_be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

}  // namespace

void Sha256::reset() {
  static constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memcpy(h_, kInit, sizeof(h_));
  buf_len_ = 0;
  total_ = 0;
}

void Sha256::compress(const uint8_t* block) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i) w[i] = load_be32(block + 4 * i);
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a;
  h_[1] += b;
  h_[2] += c;
  h_[3] += d;
  h_[4] += e;
  h_[5] += f;
  h_[6] += g;
  h_[7] += h;
}

void Sha256::update(const void* data, size_t len) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_ += len;
  if (buf_len_ > 0) {
    const size_t take = len < kBlockBytes - buf_len_ ? len : kBlockBytes - buf_len_;
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    len -= take;
    if (buf_len_ < kBlockBytes) return;
    compress(buf_);
    buf_len_ = 0;
  }
  while (len >= kBlockBytes) {
    compress(p);
    p += kBlockBytes;
    len -= kBlockBytes;
  }
  if (len > 0) {
    std::memcpy(buf_, p, len);
    buf_len_ = len;
  }
}

void Sha256::finish(uint8_t out[kDigestBytes]) {
  const uint64_t bits = total_ * 8;
  uint8_t pad[kBlockBytes * 2] = {0x80};
  const size_t pad_len = (buf_len_ < 56 ? 56 - buf_len_ : 120 - buf_len_);
  for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  update(pad, pad_len + 8);
  for (int i = 0; i < 8; ++i) store_be32(out + 4 * i, h_[i]);
  reset();
}

// With OpenSSL linked (EDGERT_SIGNATURES) the one-shot functions take its SHA-NI / ARMv8 crypto-extension
// code: 7.5x faster than Sha256 on a 293 KiB packet here (docs/results/signing.md), and the HMAC of every
// packet a keyed slot applies runs through it. OpenSSL allocates a context per call; if that fails the
// portable code gives the same digest.
void sha256(const void* data, size_t len, uint8_t out[Sha256::kDigestBytes]) {
#if defined(EDGERT_WITH_OPENSSL)
  unsigned int n = 0;
  if (EVP_Digest(data, len, out, &n, EVP_sha256(), nullptr) == 1 && n == Sha256::kDigestBytes) return;
  ERR_clear_error();
#endif
  Sha256 h;
  h.update(data, len);
  h.finish(out);
}

void HmacSha256::init(const uint8_t* key, size_t key_len) {
  uint8_t k[Sha256::kBlockBytes] = {0};
  if (key_len > Sha256::kBlockBytes) {
    sha256(key, key_len, k);
  } else if (key_len > 0) {
    std::memcpy(k, key, key_len);
  }
  uint8_t ipad[Sha256::kBlockBytes];
  for (size_t i = 0; i < Sha256::kBlockBytes; ++i) {
    ipad[i] = static_cast<uint8_t>(k[i] ^ 0x36);
    opad_key_[i] = static_cast<uint8_t>(k[i] ^ 0x5c);
  }
  inner_.reset();
  inner_.update(ipad, sizeof(ipad));
}

void HmacSha256::finish(uint8_t out[Sha256::kDigestBytes]) {
  uint8_t inner_digest[Sha256::kDigestBytes];
  inner_.finish(inner_digest);
  Sha256 outer;
  outer.update(opad_key_, sizeof(opad_key_));
  outer.update(inner_digest, sizeof(inner_digest));
  outer.finish(out);
}

void hmac_sha256(const uint8_t* key, size_t key_len, const void* data, size_t len,
                 uint8_t out[Sha256::kDigestBytes]) {
#if defined(EDGERT_WITH_OPENSSL)
  static const uint8_t kNoKey = 0;  // never a null pointer to OpenSSL (a null key means "reuse the last one")
  unsigned int n = 0;
  if (key_len <= 0x7fffffff && HMAC(EVP_sha256(), key_len > 0 ? key : &kNoKey, static_cast<int>(key_len),
                                    len > 0 ? static_cast<const unsigned char*>(data) : &kNoKey, len, out, &n) != nullptr &&
      n == Sha256::kDigestBytes) {
    return;
  }
  ERR_clear_error();
#endif
  HmacSha256 mac;
  mac.init(key, key_len);
  mac.update(data, len);
  mac.finish(out);
}

Sha256Stream::Sha256Stream() {
#if defined(EDGERT_WITH_OPENSSL)
  evp_ = EVP_MD_CTX_new();
#endif
  reset();
}

Sha256Stream::~Sha256Stream() {
#if defined(EDGERT_WITH_OPENSSL)
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(evp_));
#endif
}

void Sha256Stream::reset() {
  portable_.reset();
#if defined(EDGERT_WITH_OPENSSL)
  if (evp_ != nullptr && EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(evp_), EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(evp_));  // from here on the portable code
    evp_ = nullptr;
    ERR_clear_error();
  }
#endif
}

void Sha256Stream::update(const void* data, size_t len) {
#if defined(EDGERT_WITH_OPENSSL)
  if (evp_ != nullptr) {
    if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(evp_), data, len) == 1) return;
    // Cannot happen for SHA-256 in memory; if it did, the digest would be wrong: poison it.
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(evp_));
    evp_ = nullptr;
    ERR_clear_error();
    const uint8_t poison = 0xff;
    portable_.update(&poison, 1);
  }
#endif
  portable_.update(data, len);
}

void Sha256Stream::finish(uint8_t out[Sha256::kDigestBytes]) {
#if defined(EDGERT_WITH_OPENSSL)
  unsigned int n = 0;
  if (evp_ != nullptr) {
    if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(evp_), out, &n) == 1 && n == Sha256::kDigestBytes) return;
    std::memset(out, 0, Sha256::kDigestBytes);  // a digest no signature matches
    ERR_clear_error();
    return;
  }
#endif
  portable_.finish(out);
}

bool constant_time_equal(const uint8_t* a, const uint8_t* b, size_t n) {
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < n; ++i) diff = static_cast<uint8_t>(diff | (a[i] ^ b[i]));
  return diff == 0;
}

}  // namespace edgert::packet

extern "C" edgert_status edgert_hmac_sha256(const uint8_t* key, size_t key_len, const void* data, size_t len,
                                           uint8_t out[32]) {
  if (out == nullptr || (key == nullptr && key_len > 0) || (data == nullptr && len > 0)) {
    return edgert::detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "hmac_sha256: null buffer");
  }
  edgert::packet::hmac_sha256(key, key_len, data, len, out);
  return EDGERT_OK;
}

extern "C" edgert_status edgert_sha256(const void* data, size_t len, uint8_t out[32]) {
  if (out == nullptr || (data == nullptr && len > 0)) {
    return edgert::detail::fail(EDGERT_ERR_INVALID_ARGUMENT, "sha256: null buffer");
  }
  edgert::packet::sha256(data, len, out);
  return EDGERT_OK;
}

extern "C" int edgert_mac_equal(const uint8_t* a, const uint8_t* b, size_t n) {
  if (a == nullptr || b == nullptr) return 0;
  return edgert::packet::constant_time_equal(a, b, n) ? 1 : 0;
}
