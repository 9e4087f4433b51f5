#include "packet/signature.hpp"

#include <cstring>
#include <ctime>

#if defined(EDGERT_WITH_OPENSSL)
#include <openssl/err.h>
#include <openssl/evp.h>
#endif
#if defined(EDGERT_ED25519_SODIUM)
#include <sodium.h>
#endif

#include "core/error.hpp"
#include "packet/bytes.hpp"
#include "packet/format.hpp"
#include "packet/sha256.hpp"

namespace edgert::packet {

using detail::fail;

namespace {

using ull = unsigned long long;

constexpr char kStatementDomain[] = "edgert key statement v1";  // + its NUL: 24 bytes
constexpr char kPacketDomain[] = "edgert release packet v1";    // + its NUL: 25 bytes
constexpr uint8_t kBlockMagic[4] = {'E', 'R', 'S', 'B'};
constexpr uint8_t kStatementMagic[4] = {'E', 'R', 'T', 'K'};

void key_id(const uint8_t* public_key, uint8_t out[kKeyIdBytes]) {
  uint8_t digest[Sha256::kDigestBytes];
  sha256(public_key, kPublicKeyBytes, digest);
  std::memcpy(out, digest, kKeyIdBytes);
}

bool same_id(const uint8_t* id, const uint8_t* public_key) {
  uint8_t expected[kKeyIdBytes];
  key_id(public_key, expected);
  return std::memcmp(id, expected, kKeyIdBytes) == 0;
}

// Ed25519 verification, from the backend CMake chose (EDGERT_SIGNATURES_BACKEND): libsodium's
// crypto_sign_verify_detached takes 52 us here, OpenSSL 3.0's EVP_DigestVerify 118 us (docs/results/signing.md).
// libsodium also refuses small-order public keys and R values, which no honestly generated key produces.
#if defined(EDGERT_ED25519_SODIUM)
constexpr char kEd25519Backend[] = "sodium";
bool ed25519_verify(const uint8_t* public_key, const uint8_t* signature, const uint8_t* msg, size_t len) {
  static const bool ready = sodium_init() >= 0;  // once, thread-safe; picks the CPU's implementations
  return ready && crypto_sign_verify_detached(signature, msg, len, public_key) == 0;
}
#elif defined(EDGERT_WITH_SIGNATURES)
constexpr char kEd25519Backend[] = "openssl";
// OpenSSL allocates its key and context objects internally (one of each per call).
bool ed25519_verify(const uint8_t* public_key, const uint8_t* signature, const uint8_t* msg, size_t len) {
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, public_key, kPublicKeyBytes);
  EVP_MD_CTX* ctx = key ? EVP_MD_CTX_new() : nullptr;
  const bool ok = ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key) == 1 &&
                  EVP_DigestVerify(ctx, signature, kSignatureBytes, msg, len) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  ERR_clear_error();
  return ok;
}
#else
constexpr char kEd25519Backend[] = "";
bool ed25519_verify(const uint8_t*, const uint8_t*, const uint8_t*, size_t) { return false; }
#endif

// SHA-256(header, payload): through OpenSSL when it is linked (its SHA-NI / ARMv8 crypto-extension code
// hashes a large packet 7.5x faster than the portable Sha256), else the portable Sha256.
bool packet_digest(const uint8_t* header, const uint8_t* payload, size_t payload_len, uint8_t out[32]) {
#if defined(EDGERT_WITH_OPENSSL)
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int n = 0;
  const bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, header, kPacketHeaderBytes) == 1 &&
                  EVP_DigestUpdate(ctx, payload, payload_len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == 32;
  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  if (ok) return true;
#endif
  Sha256 h;
  h.update(header, kPacketHeaderBytes);
  h.update(payload, payload_len);
  h.finish(out);
  return true;
}

// A statement's signature: Ed25519 over the domain string (with its NUL) and bytes 0..63.
bool statement_verifies(const uint8_t* st, const uint8_t* public_key) {
  uint8_t msg[sizeof(kStatementDomain) + 64];
  std::memcpy(msg, kStatementDomain, sizeof(kStatementDomain));
  std::memcpy(msg + sizeof(kStatementDomain), st, 64);
  return same_id(st + 56, public_key) && ed25519_verify(public_key, st + 64, msg, sizeof(msg));
}

uint64_t now_seconds(const Trust& trust) {
  if (trust.fixed_time != 0) return trust.fixed_time;
  const std::time_t t = std::time(nullptr);
  return t > 0 ? static_cast<uint64_t>(t) : 0;
}

}  // namespace

bool signatures_available() {
#if defined(EDGERT_WITH_SIGNATURES)
  return true;
#else
  return false;
#endif
}

const char* signatures_backend() { return kEd25519Backend; }

edgert_status parse_signature_block(const uint8_t* b, size_t len, SignatureBlock* out) {
  if (len < kBlockHeaderBytes || std::memcmp(b, kBlockMagic, 4) != 0) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "signature block: %zu bytes, bad magic (expected 'ERSB')", len);
  }
  if (b[4] != kBlockVersion || load_u16(b + 6) != 0) {
    return fail(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "signature block: version %u, reserved 0x%04x (expected 1, 0)",
                b[4], load_u16(b + 6));
  }
  const unsigned count = b[5];
  if (count > kMaxRotations || len != block_bytes(count)) {
    return fail(EDGERT_ERR_PACKET_MALFORMED, "signature block: %zu bytes with %u root rotations (at most %u)", len,
                count, kMaxRotations);
  }
  const uint8_t* st = b + kBlockHeaderBytes;
  uint64_t last = 0;
  for (unsigned i = 0; i <= count; ++i, st += kStatementBytes) {
    const bool delegation = i == count;
    const uint8_t kind = st[4];
    if (std::memcmp(st, kStatementMagic, 4) != 0 || st[5] != 0 || load_u16(st + 6) != 0 ||
        kind != (delegation ? kKindRelease : kKindRoot)) {
      return fail(EDGERT_ERR_PACKET_MALFORMED, "signature block: statement %u is not a %s statement", i,
                  delegation ? "delegation (ERTK kind 2)" : "root rotation (ERTK kind 1)");
    }
    if (!delegation) {
      const uint64_t version = load_u64(st + 8);
      if (load_u64(st + 16) != 0 || (i > 0 && version <= last)) {
        return fail(EDGERT_ERR_PACKET_MALFORMED,
                    "signature block: root rotation %u has an expiry or is out of version order", i);
      }
      last = version;
    }
  }
  const uint8_t* tail = b + kBlockHeaderBytes + kStatementBytes * (count + 1);
  *out = SignatureBlock{count, b + kBlockHeaderBytes, tail, load_u64(tail + 8), tail + 16};
  return EDGERT_OK;
}

edgert_status verify_signature(const uint8_t* p, uint64_t payload_len, const SignatureBlock& block,
                               const Trust& trust, Trust* after, const uint8_t* digest) {
  if (!signatures_available()) {
    return fail(EDGERT_ERR_BACKEND_UNAVAILABLE, "signatures: libedgert was built without EDGERT_SIGNATURES");
  }
  TrustState s = trust.state;
  const uint8_t* st = block.statements;
  bool root_changed = false;
  for (unsigned i = 0; i < block.rotations; ++i, st += kStatementBytes) {
    const uint64_t version = load_u64(st + 8);
    if (version <= s.root_version) continue;  // applied before
    if (version != s.root_version + 1 || !statement_verifies(st, s.root_key)) {
      return fail(EDGERT_ERR_PACKET_BAD_ROTATION,
                  "signature block: root rotation to version %llu is not signed by root version %llu",
                  static_cast<ull>(version), static_cast<ull>(s.root_version));
    }
    std::memcpy(s.root_key, st + 24, kPublicKeyBytes);
    s.root_version = version;
    root_changed = true;
  }
  // st is the delegation.
  if (!same_id(st + 56, s.root_key)) {
    return fail(EDGERT_ERR_PACKET_UNKNOWN_KEY, "signature block: the delegation is not signed by the root key");
  }
  const bool cached = !root_changed && trust.cached && std::memcmp(trust.cached_delegation, st, kStatementBytes) == 0;
  if (!cached && !statement_verifies(st, s.root_key)) {
    return fail(EDGERT_ERR_PACKET_BAD_SIGNATURE, "signature block: the delegation's signature does not verify");
  }
  const uint64_t delegation_version = load_u64(st + 8);
  if (delegation_version < s.min_release_version) {
    return fail(EDGERT_ERR_PACKET_UNKNOWN_KEY,
                "signature block: release key delegation %llu was revoked (the device accepts >= %llu)",
                static_cast<ull>(delegation_version), static_cast<ull>(s.min_release_version));
  }
  const uint64_t now = now_seconds(trust);
  const uint64_t delegation_expiry = load_u64(st + 16);
  if (delegation_expiry <= now) {
    return fail(EDGERT_ERR_PACKET_EXPIRED, "signature block: the delegation expired at %llu (now %llu)",
                static_cast<ull>(delegation_expiry), static_cast<ull>(now));
  }
  const uint8_t* release_key = st + 24;
  if (!same_id(block.signer_id, release_key)) {
    return fail(EDGERT_ERR_PACKET_UNKNOWN_KEY, "signature block: the packet's signer is not the delegated key");
  }
  // Message: domain, SHA-256(header with the authenticated flag cleared, payload), key id, expiry.
  uint8_t msg[sizeof(kPacketDomain) + Sha256::kDigestBytes + kKeyIdBytes + 8];
  uint8_t header[kPacketHeaderBytes];
  std::memcpy(header, p, kPacketHeaderBytes);
  store_u16(header + 6, static_cast<uint16_t>(load_u16(header + 6) & ~kFlagAuthenticated));
  std::memcpy(msg, kPacketDomain, sizeof(kPacketDomain));
  if (digest != nullptr) {
    std::memcpy(msg + sizeof(kPacketDomain), digest, Sha256::kDigestBytes);
  } else if (!packet_digest(header, p + kPacketHeaderBytes, static_cast<size_t>(payload_len),
                            msg + sizeof(kPacketDomain))) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "signature block: cannot hash the packet");
  }
  std::memcpy(msg + sizeof(kPacketDomain) + Sha256::kDigestBytes, block.signer_id, kKeyIdBytes + 8);
  if (!ed25519_verify(release_key, block.signature, msg, sizeof(msg))) {
    return fail(EDGERT_ERR_PACKET_BAD_SIGNATURE, "signature block: the packet signature does not verify");
  }
  if (block.expiry <= now) {
    return fail(EDGERT_ERR_PACKET_EXPIRED, "signature block: the packet expired at %llu (now %llu)",
                static_cast<ull>(block.expiry), static_cast<ull>(now));
  }
  if (delegation_version > s.min_release_version) s.min_release_version = delegation_version;
  *after = trust;
  after->state = s;
  after->cached = true;
  std::memcpy(after->cached_delegation, st, kStatementBytes);
  return EDGERT_OK;
}

}  // namespace edgert::packet
