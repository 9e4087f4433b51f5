// Update packets, manifests and model slots: golden packets shared with the
// Python encoder, crypto test vectors, the malformed-packet suite (exact
// status, weights and version unchanged), snapshots and reader concurrency.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/half.hpp"
#include "edgert/edgert.h"
#include "golden.hpp"
#include "packet/bytes.hpp"
#include "packet/crc32c.hpp"
#include "packet/encode_v2.hpp"
#include "packet/encode_v3.hpp"
#include "packet/format.hpp"
#include "packet/range_coder.hpp"
#include "packet/sha256.hpp"

namespace {

using namespace edgert_test;  // NOLINT: golden files and slot helpers
namespace pk = edgert::packet;

std::string hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

// Applies `p` to `s`, expects `status`, and that weights and version did not move.
void expect_rejected_by(edgert_slot* s, const Bytes& p, edgert_status status, const std::string& what) {
  const Bytes before = weights_of(s);
  const uint64_t version = edgert_slot_version(s);
  EXPECT_EQ(edgert_slot_apply(s, p.data(), p.size()), status) << what << ": got message '" << edgert_last_error() << "'";
  EXPECT_EQ(weights_of(s), before) << what;
  EXPECT_EQ(edgert_slot_version(s), version) << what;
}

// Recomputes the CRC (and the MAC under `key` if the packet is authenticated)
// after a test edits the bytes, so that the check under test is the one that fires.
void reseal(Bytes& p, const Bytes& key = {}) {
  const uint64_t payload = pk::load_u64(p.data() + 64);
  const size_t body = pk::kPacketHeaderBytes + payload;
  pk::store_u32(p.data() + body, pk::crc32c(p.data(), body));
  if ((pk::load_u16(p.data() + 6) & pk::kFlagAuthenticated) && !key.empty()) {
    pk::hmac_sha256(key.data(), key.size(), p.data(), body + 4, p.data() + body + 4);
  }
}

struct EntrySpec {
  uint32_t id;
  uint8_t index_coding, value_coding, mode, k;
  uint64_t numel, count;
  Bytes index, values;
  float scale = 0.0f;
};

// Builds a packet from raw parts (no validation: tests craft bad packets).
Bytes build_packet(const Bytes& manifest, uint64_t base, uint64_t target, const std::vector<EntrySpec>& entries,
                   uint16_t flags = 0, const Bytes& key = {}) {
  Bytes payload;
  for (const EntrySpec& e : entries) {
    uint8_t h[pk::kEntryHeaderBytes] = {0};
    pk::store_u32(h, e.id);
    h[4] = e.index_coding;
    h[5] = e.value_coding;
    h[6] = e.mode;
    h[7] = e.k;
    pk::store_u64(h + 8, e.numel);
    pk::store_u64(h + 16, e.count);
    pk::store_u64(h + 24, e.index.size());
    pk::store_u64(h + 32, e.values.size());
    uint32_t bits;
    std::memcpy(&bits, &e.scale, 4);
    pk::store_u32(h + 40, bits);
    payload.insert(payload.end(), h, h + sizeof(h));
    payload.insert(payload.end(), e.index.begin(), e.index.end());
    payload.insert(payload.end(), e.values.begin(), e.values.end());
  }
  Bytes p(pk::kPacketHeaderBytes, 0);
  std::memcpy(p.data(), "ERTP", 4);
  pk::store_u16(p.data() + 4, 1);
  pk::store_u16(p.data() + 6, flags);
  std::memcpy(p.data() + 8, manifest.data() + 8, 32);  // model id + table hash
  pk::store_u64(p.data() + 40, base);
  pk::store_u64(p.data() + 48, target);
  pk::store_u32(p.data() + 56, static_cast<uint32_t>(entries.size()));
  pk::store_u64(p.data() + 64, payload.size());
  p.insert(p.end(), payload.begin(), payload.end());
  p.resize(p.size() + 4 + ((flags & pk::kFlagAuthenticated) ? 32 : 0));
  reseal(p, key);
  return p;
}

Bytes f32_values(const std::vector<float>& v) {
  Bytes out(v.size() * 4);
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t b;
    std::memcpy(&b, &v[i], 4);
    pk::store_u32(out.data() + 4 * i, b);
  }
  return out;
}

// ---- crypto and checksums -------------------------------------------------------

TEST(PacketCrypto, Crc32cKnownValues) {
  EXPECT_EQ(pk::crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(pk::crc32c("", 0), 0u);
  Bytes zeros(32, 0);
  EXPECT_EQ(pk::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  Bytes ones(32, 0xff);
  EXPECT_EQ(pk::crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  // Incremental over odd splits equals one shot (slicing-by-8 tail handling).
  Bytes data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + 3);
  const uint32_t whole = pk::crc32c(data.data(), data.size());
  for (size_t split : {0u, 1u, 7u, 8u, 9u, 500u, 999u}) {
    EXPECT_EQ(pk::crc32c_update(pk::crc32c(data.data(), split), data.data() + split, data.size() - split), whole);
  }
  EXPECT_EQ(edgert_crc32c(0, "123456789", 9), 0xE3069283u);
  // The hardware path (when the CPU has one) agrees with the tables on every length and alignment.
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t len = 0; len + offset <= 64; ++len) {
      ASSERT_EQ(pk::crc32c_update(0x12345678u, data.data() + offset, len),
                pk::crc32c_update_portable(0x12345678u, data.data() + offset, len))
          << "offset " << offset << " len " << len;
    }
  }
}

TEST(PacketCrypto, Sha256Fips180Vectors) {
  uint8_t d[32];
  pk::sha256("abc", 3, d);
  EXPECT_EQ(hex(d, 32), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  pk::sha256("", 0, d);
  EXPECT_EQ(hex(d, 32), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char* two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  pk::sha256(two_blocks, std::strlen(two_blocks), d);
  EXPECT_EQ(hex(d, 32), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  pk::Sha256 h;  // one million 'a', fed in uneven pieces
  const std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left) {
    const size_t n = left < chunk.size() ? left : chunk.size();
    h.update(chunk.data(), n);
    left -= n;
  }
  h.finish(d);
  EXPECT_EQ(hex(d, 32), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(PacketCrypto, HmacSha256Rfc4231Vectors) {
  uint8_t tag[32];
  const Bytes key1(20, 0x0b);
  pk::hmac_sha256(key1.data(), key1.size(), "Hi There", 8, tag);
  EXPECT_EQ(hex(tag, 32), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  const char* jefe_msg = "what do ya want for nothing?";
  pk::hmac_sha256(reinterpret_cast<const uint8_t*>("Jefe"), 4, jefe_msg, std::strlen(jefe_msg), tag);
  EXPECT_EQ(hex(tag, 32), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  const Bytes key6(131, 0xaa);
  const char* msg6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  pk::hmac_sha256(key6.data(), key6.size(), msg6, std::strlen(msg6), tag);
  EXPECT_EQ(hex(tag, 32), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  const Bytes a(32, 1), b(32, 1);
  Bytes c = a;
  c[31] = 2;
  EXPECT_TRUE(pk::constant_time_equal(a.data(), b.data(), 32));
  EXPECT_FALSE(pk::constant_time_equal(a.data(), c.data(), 32));
}

// ---- golden packets ----------------------------------------------------------------

int chain_format(int v) { return v == 8 || v == 9 || v >= 14 ? 3 : v == 6 || v == 7 || v >= 12 ? 2 : 1; }

TEST(PacketGolden, ManifestDescribesTheModel) {
  const Bytes m = read_golden("manifest.bin");
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(edgert_slot_version(slot.s), 0u);
  ASSERT_EQ(edgert_slot_tensor_count(slot.s), 6u);
  edgert_tensor_info info;
  ASSERT_EQ(edgert_slot_tensor_info(slot.s, 2, &info), EDGERT_OK);
  EXPECT_STREQ(info.name, "fc.weight");
  EXPECT_EQ(info.dtype, EDGERT_F16);
  EXPECT_EQ(info.ndim, 2);
  EXPECT_EQ(info.shape[0], 10);
  EXPECT_EQ(info.shape[1], 20);
  EXPECT_EQ(info.numel, 200u);
  EXPECT_EQ(info.byte_offset % 64, 0u);
  ASSERT_EQ(edgert_slot_tensor_info(slot.s, 4, &info), EDGERT_OK);
  EXPECT_EQ(info.ndim, 0);
  EXPECT_EQ(info.numel, 1u);
  EXPECT_EQ(edgert_slot_tensor_info(slot.s, 6, &info), EDGERT_ERR_INDEX_OUT_OF_RANGE);
  uint8_t id[16];
  edgert_slot_model_id(slot.s, id);
  EXPECT_EQ(std::memcmp(id, m.data() + 8, 16), 0);
  EXPECT_EQ(weights_of(slot.s), Bytes(edgert_slot_weights_size(slot.s), 0));
}

TEST(PacketGolden, ChainDecodesToExpectedWeights) {
  const Bytes m = read_golden("manifest.bin");
  const Bytes key = read_golden("key.bin");
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK);
  EXPECT_EQ(edgert_packet_max_format(), 3);
  for (int v = 1; v <= kChainLength; ++v) {
    const Bytes p = read_golden(kChain[v - 1]);
    edgert_packet_header h;
    ASSERT_EQ(edgert_packet_inspect(p.data(), p.size(), &h), EDGERT_OK);
    EXPECT_EQ(h.target_version, static_cast<uint64_t>(v));
    EXPECT_EQ(h.full_snapshot, v == 1 ? 1 : 0);
    EXPECT_EQ(h.authenticated, v >= 5 ? 1 : 0);
    EXPECT_EQ(h.format_version, chain_format(v));
    if (v == 5) ASSERT_EQ(edgert_slot_set_key(slot.s, key.data(), key.size()), EDGERT_OK);
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << kChain[v - 1] << ": " << edgert_last_error();
    EXPECT_EQ(edgert_slot_version(slot.s), static_cast<uint64_t>(v));
    EXPECT_EQ(weights_of(slot.s), read_golden("weights_v" + std::to_string(v) + ".bin")) << kChain[v - 1];
  }
  // read_tensor agrees with the buffer.
  edgert_tensor_info info;
  ASSERT_EQ(edgert_slot_tensor_info(slot.s, 2, &info), EDGERT_OK);
  Bytes t(info.byte_size);
  uint64_t version = 0;
  ASSERT_EQ(edgert_slot_read_tensor(slot.s, 2, t.data(), t.size(), &version), EDGERT_OK);
  EXPECT_EQ(version, static_cast<uint64_t>(kChainLength));
  const Bytes all = weights_of(slot.s);
  EXPECT_EQ(Bytes(all.begin() + info.byte_offset, all.begin() + info.byte_offset + info.byte_size), t);
  EXPECT_EQ(edgert_slot_read_tensor(slot.s, 2, t.data(), t.size() - 1, &version), EDGERT_ERR_BUFFER_TOO_SMALL);
}

TEST(PacketGolden, SnapshotResyncsFromAnyVersion) {
  const Bytes m = read_golden("manifest.bin");
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK);
  for (int v = 1; v <= 4; ++v) {
    const Bytes p = read_golden(kChain[v - 1]);
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK);
  }
  // A snapshot v4 -> v9 (base ignored) replaces everything.
  Bytes snap = read_golden("full_snapshot.bin");
  pk::store_u64(snap.data() + 48, 9);
  reseal(snap);
  ASSERT_EQ(edgert_slot_apply(slot.s, snap.data(), snap.size()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(edgert_slot_version(slot.s), 9u);
  EXPECT_EQ(weights_of(slot.s), read_golden("weights_v1.bin"));
}

// ---- malformed packets ---------------------------------------------------------------

class Malformed : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest = read_golden("manifest.bin");
    ASSERT_EQ(edgert_slot_create(manifest.data(), manifest.size(), &slot.s), EDGERT_OK);
    const Bytes snap = read_golden("full_snapshot.bin");
    ASSERT_EQ(edgert_slot_apply(slot.s, snap.data(), snap.size()), EDGERT_OK);
    sparse = read_golden("sparse_fp16.bin");  // v1 -> v2
  }
  // Applies `p`, expects `status`, and that weights and version did not move.
  void expect_rejected(const Bytes& p, edgert_status status, const std::string& what) {
    expect_rejected_by(slot.s, p, status, what);
  }
  size_t entry_offset(const Bytes& p, int entry) const {  // header offset of entry `entry`
    size_t off = pk::kPacketHeaderBytes;
    for (int i = 0; i < entry; ++i) off += pk::kEntryHeaderBytes + pk::load_u64(&p[off + 24]) + pk::load_u64(&p[off + 32]);
    return off;
  }
  Bytes manifest;
  SlotPtr slot;
  Bytes sparse;
};

TEST_F(Malformed, EveryTruncationPoint) {
  for (size_t n = 0; n < sparse.size(); ++n) {
    expect_rejected(Bytes(sparse.begin(), sparse.begin() + n), EDGERT_ERR_PACKET_TRUNCATED,
                    "truncated to " + std::to_string(n));
  }
  EXPECT_EQ(edgert_slot_apply(slot.s, nullptr, 0), EDGERT_ERR_PACKET_TRUNCATED);
}

TEST_F(Malformed, TrailingBytes) {
  Bytes p = sparse;
  p.push_back(0);
  expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "one extra byte");
}

TEST_F(Malformed, HeaderFields) {
  Bytes p = sparse;
  p[0] ^= 1;
  expect_rejected(p, EDGERT_ERR_PACKET_BAD_MAGIC, "bad magic");
  p = sparse;
  pk::store_u16(p.data() + 4, 2);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "future format version");
  p = sparse;
  pk::store_u16(p.data() + 4, 0);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "format version 0");
  p = sparse;
  p[6] |= 0x80;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "unknown flag");
  p = sparse;
  p[60] = 1;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "reserved header field");
  p = sparse;
  p[8] ^= 1;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_WRONG_MODEL, "wrong model id");
  p = sparse;
  p[24 + 15] ^= 1;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_WRONG_MODEL, "wrong table hash");
  p = sparse;
  pk::store_u64(p.data() + 64, std::numeric_limits<uint64_t>::max());
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_TRUNCATED, "payload length 2^64-1");
  p = sparse;
  pk::store_u64(p.data() + 48, 1);  // target == base
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "target not after base");
}

TEST_F(Malformed, VersionChain) {
  Bytes p = sparse;
  pk::store_u64(p.data() + 40, 0);  // base 0 while active is 1
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_VERSION_MISMATCH, "wrong base version");
  ASSERT_EQ(edgert_slot_apply(slot.s, sparse.data(), sparse.size()), EDGERT_OK);
  expect_rejected(sparse, EDGERT_ERR_PACKET_STALE, "replayed packet");
  expect_rejected(read_golden("full_snapshot.bin"), EDGERT_ERR_PACKET_STALE, "replayed old snapshot");
}

TEST_F(Malformed, IntegrityAndAuthentication) {
  Bytes p = sparse;
  p[p.size() / 2] ^= 0x10;
  expect_rejected(p, EDGERT_ERR_PACKET_BAD_CRC, "flipped payload bit");
  p = sparse;
  p.back() ^= 1;
  expect_rejected(p, EDGERT_ERR_PACKET_BAD_CRC, "flipped CRC bit");

  const Bytes key = read_golden("key.bin");
  ASSERT_EQ(edgert_slot_set_key(slot.s, key.data(), key.size()), EDGERT_OK);
  expect_rejected(sparse, EDGERT_ERR_PACKET_MAC_REQUIRED, "unauthenticated packet with key set");
  // Authenticated v1 -> v2 with the right and a wrong key.
  Bytes auth = sparse;
  pk::store_u16(auth.data() + 6, pk::kFlagAuthenticated);
  auth.resize(auth.size() + 32);
  Bytes wrong_key = key;
  wrong_key[0] ^= 1;
  reseal(auth, wrong_key);
  expect_rejected(auth, EDGERT_ERR_PACKET_BAD_MAC, "MAC under another key");
  reseal(auth, key);
  Bytes bad = auth;
  bad.back() ^= 1;
  expect_rejected(bad, EDGERT_ERR_PACKET_BAD_MAC, "flipped MAC bit");
  EXPECT_EQ(edgert_slot_set_key(slot.s, key.data(), 8), EDGERT_ERR_INVALID_ARGUMENT);
  ASSERT_EQ(edgert_slot_apply(slot.s, auth.data(), auth.size()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(weights_of(slot.s), read_golden("weights_v2.bin"));
}

TEST_F(Malformed, TensorEntries) {
  const size_t e0 = entry_offset(sparse, 0), e1 = entry_offset(sparse, 1);
  Bytes p = sparse;
  pk::store_u32(p.data() + e1, pk::load_u32(p.data() + e0));
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_BAD_TENSOR, "duplicate tensor id");
  p = sparse;
  pk::store_u32(p.data() + e0, 99);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_BAD_TENSOR, "unknown tensor id");
  p = sparse;
  pk::store_u64(p.data() + e0 + 8, pk::load_u64(p.data() + e0 + 8) + 1);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_BAD_TENSOR, "element count mismatch");
  p = sparse;
  pk::store_u32(p.data() + 56, 7);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_BAD_TENSOR, "more entries than tensors");
  p = sparse;
  pk::store_u32(p.data() + 56, 5);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "entry count beyond payload");
  p = sparse;
  pk::store_u32(p.data() + 56, 3);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "payload left after the last entry");
  for (size_t field : {24u, 32u}) {
    p = sparse;
    pk::store_u64(p.data() + e0 + field, std::numeric_limits<uint64_t>::max());
    reseal(p);
    expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "section length 2^64-1 at +" + std::to_string(field));
    p = sparse;
    pk::store_u64(p.data() + e0 + field, pk::load_u64(p.data() + e0 + field) + 1);
    reseal(p);
    expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "section length + 1 at +" + std::to_string(field));
  }
  p = sparse;
  pk::store_u64(p.data() + e0 + 16, pk::load_u64(p.data() + e0 + 16) + 1);
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "count disagrees with sections");
  p = sparse;
  p[e0 + 5] = pk::kValueQ8BlockAc + 1;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "unknown value coding");
  p = sparse;
  p[e0 + 4] = 9;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "unknown index coding");
  p = sparse;
  p[e0 + 6] = 2;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "unknown mode");
  p = sparse;
  p[e0 + 7] = 32;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "Rice parameter 32");
  p = sparse;
  p[e0 + 40] = 1;
  reseal(p);
  expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "scale without int8 values");
}

TEST_F(Malformed, RiceIndexSections) {
  // conv.bias (id 1): numel 4, fp32 values.
  auto one = [&](uint64_t count, Bytes index, uint8_t k = 0) {
    EntrySpec e{1, pk::kIndexRice, pk::kValueF32, pk::kModeAdd, k, 4, count, std::move(index),
                f32_values(std::vector<float>(count, 1.0f))};
    return build_packet(manifest, 1, 2, {e});
  };
  // Gap 3 -> index 3: bits 1110 (LSB first) = 0x07. Valid.
  expect_rejected(one(1, {0x0F}), EDGERT_ERR_PACKET_MALFORMED, "index 4 out of range [0, 4)");
  expect_rejected(one(2, {0x07}), EDGERT_ERR_PACKET_MALFORMED, "second index past the end");
  expect_rejected(one(1, {0x00, 0x00}), EDGERT_ERR_PACKET_MALFORMED, "extra index byte");
  expect_rejected(one(1, {0xF0 | 0x07}), EDGERT_ERR_PACKET_MALFORMED, "non-zero padding");
  expect_rejected(one(1, {}), EDGERT_ERR_PACKET_MALFORMED, "empty index section");
  expect_rejected(one(1, Bytes(20, 0xFF)), EDGERT_ERR_PACKET_MALFORMED, "long unary run");
  expect_rejected(one(1, {0x00}, 8), EDGERT_ERR_PACKET_MALFORMED, "remainder past the end");
  // Gaps 0,0 -> indices 0,1 with k = 0: bits 00 -> 0x00; then index 3 from gap 1 (bits 10).
  const Bytes ok = one(3, {0x01 << 2});
  ASSERT_EQ(edgert_slot_apply(slot.s, ok.data(), ok.size()), EDGERT_OK) << edgert_last_error();
  float bias[4];
  uint64_t version = 0;
  const Bytes v1 = read_golden("weights_v1.bin");
  ASSERT_EQ(edgert_slot_read_tensor(slot.s, 1, bias, sizeof(bias), &version), EDGERT_OK);
  edgert_tensor_info info;
  ASSERT_EQ(edgert_slot_tensor_info(slot.s, 1, &info), EDGERT_OK);
  float before[4];
  std::memcpy(before, v1.data() + info.byte_offset, sizeof(before));
  EXPECT_EQ(bias[0], before[0] + 1.0f);
  EXPECT_EQ(bias[1], before[1] + 1.0f);
  EXPECT_EQ(bias[2], before[2]);
  EXPECT_EQ(bias[3], before[3] + 1.0f);
}

TEST_F(Malformed, SnapshotRules) {
  Bytes snap = read_golden("full_snapshot.bin");
  pk::store_u64(snap.data() + 48, 5);
  pk::store_u32(snap.data() + 56, 5);  // drop the last (empty) tensor's entry
  const size_t cut = entry_offset(snap, 5);
  snap.erase(snap.begin() + cut, snap.begin() + cut + pk::kEntryHeaderBytes);
  pk::store_u64(snap.data() + 64, snap.size() - pk::kPacketHeaderBytes - 4);
  reseal(snap);
  expect_rejected(snap, EDGERT_ERR_PACKET_BAD_TENSOR, "snapshot missing a tensor");
  EntrySpec sparse_entry{1, pk::kIndexRice, pk::kValueF32, pk::kModeSet, 0, 4, 1, {0x00}, f32_values({1.0f})};
  Bytes s2 = build_packet(manifest, 0, 5, {sparse_entry}, pk::kFlagFullSnapshot);
  expect_rejected(s2, EDGERT_ERR_PACKET_BAD_TENSOR, "snapshot with one sparse entry");
}

TEST_F(Malformed, NonFiniteInt8Scale) {
  EntrySpec e{1, pk::kIndexDense, pk::kValueQ8, pk::kModeAdd, 0, 4, 4, {}, {1, 2, 3, 4},
              std::numeric_limits<float>::infinity()};
  expect_rejected(build_packet(manifest, 1, 2, {e}), EDGERT_ERR_PACKET_MALFORMED, "infinite scale");
  e.scale = std::nanf("");
  expect_rejected(build_packet(manifest, 1, 2, {e}), EDGERT_ERR_PACKET_MALFORMED, "NaN scale");
}

// Block-scaled values (INT4_BLOCK / INT8_BLOCK) on conv.bias (4 fp32) and gain (1 fp32), slot at v1.
Bytes half_bits(float f) {
  const uint16_t h = edgert::detail::float_to_half(f);
  return {static_cast<uint8_t>(h), static_cast<uint8_t>(h >> 8)};
}

TEST_F(Malformed, BlockCodedValues) {
  Bytes q4 = half_bits(0.5f);
  q4.insert(q4.end(), {0x78, 0xF1});  // q = -8, 7, 1, -1 (low nibble first)
  EntrySpec e4{1, pk::kIndexDense, pk::kValueQ4Block, pk::kModeAdd, 0, 4, 4, {}, q4};
  Bytes bad = q4;
  bad[1] = 0x7C;  // +inf scale
  EntrySpec inf_scale = e4;
  inf_scale.values = bad;
  expect_rejected(build_packet(manifest, 1, 2, {inf_scale}), EDGERT_ERR_PACKET_MALFORMED, "infinite block scale");
  bad[1] = 0x7E;  // NaN
  inf_scale.values = bad;
  expect_rejected(build_packet(manifest, 1, 2, {inf_scale}), EDGERT_ERR_PACKET_MALFORMED, "NaN block scale");
  EntrySpec long_section = e4;
  long_section.values.push_back(0);
  expect_rejected(build_packet(manifest, 1, 2, {long_section}), EDGERT_ERR_PACKET_MALFORMED, "value bytes");
  EntrySpec with_scale = e4;
  with_scale.scale = 1.0f;
  expect_rejected(build_packet(manifest, 1, 2, {with_scale}), EDGERT_ERR_PACKET_MALFORMED, "per-tensor scale set");
  EntrySpec as_q8b = e4;  // INT8_BLOCK needs 2 + 4 bytes
  as_q8b.value_coding = pk::kValueQ8Block;
  expect_rejected(build_packet(manifest, 1, 2, {as_q8b}), EDGERT_ERR_PACKET_MALFORMED, "int8 block length");
  EntrySpec unknown = e4;
  unknown.value_coding = pk::kValueQ8BlockAc;  // a format 2 coding in a format 1 entry
  expect_rejected(build_packet(manifest, 1, 2, {unknown}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "coding 10 in f1");
  unknown.value_coding = pk::kValueQ8Rans;  // a format 3 coding in a format 1 entry
  expect_rejected(build_packet(manifest, 1, 2, {unknown}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "coding 6 in f1");
  unknown.value_coding = pk::kValueQ8BlockAc + 1;
  expect_rejected(build_packet(manifest, 1, 2, {unknown}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "coding 11");
  Bytes odd = half_bits(0.25f);
  odd.push_back(0x13);  // n = 1: q = 3 in the low nibble, padding nibble 1
  EntrySpec padded{4, pk::kIndexDense, pk::kValueQ4Block, pk::kModeAdd, 0, 1, 1, {}, odd};
  expect_rejected(build_packet(manifest, 1, 2, {padded}), EDGERT_ERR_PACKET_MALFORMED, "padding nibble");

  // The good ones apply exactly: v = q * s, added in fp32.
  const auto read = [&](uint32_t id, size_t n) {
    std::vector<float> out(n);
    EXPECT_EQ(edgert_slot_read_tensor(slot.s, id, out.data(), 4 * n, nullptr), EDGERT_OK);
    return out;
  };
  const std::vector<float> bias = read(1, 4), gain = read(4, 1);
  padded.values[2] = 0x03;
  const Bytes p = build_packet(manifest, 1, 2, {e4, padded});
  ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << edgert_last_error();
  const std::vector<float> q{-8.0f, 7.0f, 1.0f, -1.0f};
  const std::vector<float> after = read(1, 4);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(after[i], bias[i] + q[i] * 0.5f) << i;
  EXPECT_EQ(read(4, 1)[0], gain[0] + 3.0f * 0.25f);
  Bytes q8 = half_bits(-0.125f);
  q8.insert(q8.end(), {0x80, 0x7F, 0x00, 0xFF});  // q = -128, 127, 0, -1
  const Bytes p8 = build_packet(manifest, 2, 3, {{1, pk::kIndexDense, pk::kValueQ8Block, pk::kModeSet, 0, 4, 4, {}, q8}});
  ASSERT_EQ(edgert_slot_apply(slot.s, p8.data(), p8.size()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(read(1, 4), (std::vector<float>{16.0f, -15.875f, -0.0f, 0.125f}));
}

TEST(PacketManifest, RejectsBadManifests) {
  const Bytes m = read_golden("manifest.bin");
  edgert_slot* s = nullptr;
  for (size_t n = 0; n < m.size(); ++n) {
    EXPECT_NE(edgert_slot_create(m.data(), n, &s), EDGERT_OK) << n;
    EXPECT_EQ(s, nullptr);
  }
  Bytes bad = m;
  bad[0] = 'X';
  EXPECT_EQ(edgert_slot_create(bad.data(), bad.size(), &s), EDGERT_ERR_PACKET_BAD_MAGIC);
  bad = m;
  bad[50] ^= 1;
  EXPECT_EQ(edgert_slot_create(bad.data(), bad.size(), &s), EDGERT_ERR_PACKET_BAD_CRC);
  bad = m;
  bad[24] ^= 1;  // table hash
  pk::store_u32(bad.data() + bad.size() - 4, pk::crc32c(bad.data(), bad.size() - 4));
  EXPECT_EQ(edgert_slot_create(bad.data(), bad.size(), &s), EDGERT_ERR_PACKET_MALFORMED);
  bad = m;
  pk::store_u16(bad.data() + 4, 2);
  pk::store_u32(bad.data() + bad.size() - 4, pk::crc32c(bad.data(), bad.size() - 4));
  EXPECT_EQ(edgert_slot_create(bad.data(), bad.size(), &s), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION);
  EXPECT_EQ(s, nullptr);
}

// ---- snapshots, hooks --------------------------------------------------------------------

TEST(PacketSlot, SaveAndLoad) {
  const Bytes m = read_golden("manifest.bin");
  SlotPtr a, b;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &a.s), EDGERT_OK);
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &b.s), EDGERT_OK);
  for (int v = 1; v <= 4; ++v) {
    const Bytes p = read_golden(kChain[v - 1]);
    ASSERT_EQ(edgert_slot_apply(a.s, p.data(), p.size()), EDGERT_OK);
  }
  const std::string path = ::testing::TempDir() + "edgert_slot_test.snap";
  ASSERT_EQ(edgert_slot_save(a.s, path.c_str()), EDGERT_OK) << edgert_last_error();
  ASSERT_EQ(edgert_slot_load(b.s, path.c_str()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(edgert_slot_version(b.s), 4u);
  EXPECT_EQ(weights_of(b.s), read_golden("weights_v4.bin"));
  // The loaded slot continues the chain.
  Bytes p5 = read_golden("authenticated.bin");
  ASSERT_EQ(edgert_slot_apply(b.s, p5.data(), p5.size()), EDGERT_OK);
  EXPECT_EQ(weights_of(b.s), read_golden("weights_v5.bin"));

  std::ifstream in(path, std::ios::binary);
  const Bytes file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const Bytes& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  };
  const Bytes before = weights_of(b.s);
  auto expect_load = [&](edgert_status status, const char* what) {
    EXPECT_EQ(edgert_slot_load(b.s, path.c_str()), status) << what << ": " << edgert_last_error();
    EXPECT_EQ(weights_of(b.s), before) << what;
    EXPECT_EQ(edgert_slot_version(b.s), 5u) << what;
  };
  Bytes bad = file;
  bad[100] ^= 1;
  write(bad);
  expect_load(EDGERT_ERR_CORRUPT_FILE, "flipped weight bit");
  write(Bytes(file.begin(), file.end() - 1));
  expect_load(EDGERT_ERR_CORRUPT_FILE, "truncated file");
  bad = file;
  bad.push_back(0);
  write(bad);
  expect_load(EDGERT_ERR_CORRUPT_FILE, "trailing byte");
  bad = file;
  bad[0] = 'X';
  write(bad);
  expect_load(EDGERT_ERR_CORRUPT_FILE, "bad magic");
  bad = file;
  bad[8] ^= 1;  // model id, CRC resealed
  pk::store_u32(bad.data() + bad.size() - 4, pk::crc32c(bad.data(), bad.size() - 4));
  write(bad);
  expect_load(EDGERT_ERR_PACKET_WRONG_MODEL, "other model");
  std::remove(path.c_str());
  expect_load(EDGERT_ERR_NOT_FOUND, "missing file");
}

struct HookLog {
  int calls = 0;
  uint64_t version = 0;
  std::vector<uint32_t> ids;
};

void record_hook(void* user, uint64_t version, const uint32_t* ids, size_t n) {
  auto* log = static_cast<HookLog*>(user);
  ++log->calls;
  log->version = version;
  log->ids.assign(ids, ids + n);
}

TEST(PacketSlot, HookSeesChangedTensors) {
  const Bytes m = read_golden("manifest.bin");
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK);
  HookLog log;
  ASSERT_EQ(edgert_slot_set_hook(slot.s, record_hook, &log), EDGERT_OK);
  for (int v = 1; v <= 3; ++v) {
    const Bytes p = read_golden(kChain[v - 1]);
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK);
  }
  EXPECT_EQ(log.calls, 3);
  EXPECT_EQ(log.version, 3u);
  EXPECT_EQ(log.ids, (std::vector<uint32_t>{1, 2}));
  const Bytes stale = read_golden("sparse_fp16.bin");
  EXPECT_EQ(edgert_slot_apply(slot.s, stale.data(), stale.size()), EDGERT_ERR_PACKET_STALE);
  EXPECT_EQ(log.calls, 3);
}

// ---- concurrency -------------------------------------------------------------------------

// Manifest with three f32 tensors, built by hand (the layout of docs/spec/update-packet.md).
Bytes make_manifest(const std::vector<uint64_t>& sizes) {
  Bytes table(4);
  pk::store_u32(table.data(), static_cast<uint32_t>(sizes.size()));
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string name = "t" + std::to_string(i);
    table.push_back(static_cast<uint8_t>(name.size()));
    table.insert(table.end(), name.begin(), name.end());
    table.push_back(EDGERT_F32);
    table.push_back(1);
    uint8_t dim[8];
    pk::store_u64(dim, sizes[i]);
    table.insert(table.end(), dim, dim + 8);
  }
  Bytes m(40, 0);
  std::memcpy(m.data(), "ERTM", 4);
  pk::store_u16(m.data() + 4, 1);
  for (int i = 0; i < 16; ++i) m[8 + i] = static_cast<uint8_t>(i);
  uint8_t digest[32];
  pk::sha256(table.data(), table.size(), digest);
  std::memcpy(m.data() + 24, digest, 16);
  m.insert(m.end(), table.begin(), table.end());
  m.resize(m.size() + 4);
  pk::store_u32(m.data() + m.size() - 4, pk::crc32c(m.data(), m.size() - 4));
  return m;
}

TEST(PacketSlot, ReadersAlwaysSeeOneVersion) {
  const std::vector<uint64_t> sizes = {4096, 257, 64};
  const Bytes m = make_manifest(sizes);
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK) << edgert_last_error();
  std::vector<edgert_tensor_info> infos(sizes.size());
  for (uint32_t i = 0; i < sizes.size(); ++i) ASSERT_EQ(edgert_slot_tensor_info(slot.s, i, &infos[i]), EDGERT_OK);

  // Odd versions: dense set to v. Even versions: Rice-coded add of 1 on every
  // coordinate (gaps all 0, k = 0), which exercises the sparse catch-up path.
  constexpr uint64_t kVersions = 300;
  std::vector<Bytes> packets;
  for (uint64_t v = 1; v <= kVersions; ++v) {
    std::vector<EntrySpec> entries;
    for (uint32_t t = 0; t < sizes.size(); ++t) {
      if (v % 2) {
        entries.push_back({t, pk::kIndexDense, pk::kValueF32, pk::kModeSet, 0, sizes[t], sizes[t], {},
                           f32_values(std::vector<float>(sizes[t], static_cast<float>(v)))});
      } else {
        entries.push_back({t, pk::kIndexRice, pk::kValueF32, pk::kModeAdd, 0, sizes[t], sizes[t],
                           Bytes((sizes[t] + 7) / 8, 0), f32_values(std::vector<float>(sizes[t], 1.0f))});
      }
    }
    packets.push_back(build_packet(m, v - 1, v, entries));
  }
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<long> reads{0};
  auto reader = [&] {
    while (!done.load()) {
      const void* w = nullptr;
      uint64_t version = 0;
      if (edgert_slot_acquire(slot.s, &w, &version) != EDGERT_OK) {
        ++bad;
        return;
      }
      const float expect = static_cast<float>(version);
      for (const edgert_tensor_info& info : infos) {
        const float* data = reinterpret_cast<const float*>(static_cast<const uint8_t*>(w) + info.byte_offset);
        for (uint64_t i = 0; i < info.numel; ++i) {
          if (data[i] != expect) {
            ++bad;
            break;
          }
        }
      }
      edgert_slot_release(slot.s, w);
      ++reads;
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) readers.emplace_back(reader);
  for (const Bytes& p : packets) {
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << edgert_last_error();
  }
  done = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(edgert_slot_version(slot.s), kVersions);
  float last[64];
  uint64_t version = 0;
  ASSERT_EQ(edgert_slot_read_tensor(slot.s, 2, last, sizeof(last), &version), EDGERT_OK);
  EXPECT_EQ(last[63], static_cast<float>(kVersions));
}

// ---- the slot applies values with the public sparse-patch arithmetic ------------------------

// A manifest of 1-D tensors of the given sizes and dtypes (F32 / F16).
Bytes make_typed_manifest(const std::vector<uint64_t>& sizes, const std::vector<edgert_dtype>& dtypes) {
  Bytes m = make_manifest(sizes);
  // The table starts at byte 40: count, then per tensor name length, name, dtype, ndim, dims.
  size_t off = 44;
  for (size_t i = 0; i < sizes.size(); ++i) {
    off += 1 + m[off];
    m[off] = static_cast<uint8_t>(dtypes[i]);
    off += 2 + 8;
  }
  const size_t table_end = m.size() - 4;
  uint8_t digest[32];
  pk::sha256(m.data() + 40, table_end - 40, digest);
  std::memcpy(m.data() + 24, digest, 16);
  pk::store_u32(m.data() + table_end, pk::crc32c(m.data(), table_end));
  return m;
}

// Golomb-Rice gaps (LSB-first bits, canonical zero padding) of strictly increasing indices.
Bytes rice_encode(const std::vector<uint32_t>& idx, unsigned k) {
  Bytes out;
  uint64_t pos = 0;
  auto put = [&](unsigned bit) {
    if (pos / 8 >= out.size()) out.push_back(0);
    if (bit) out[pos / 8] = static_cast<uint8_t>(out[pos / 8] | (1u << (pos % 8)));
    ++pos;
  };
  int64_t prev = -1;
  for (uint32_t i : idx) {
    const uint64_t gap = static_cast<uint64_t>(static_cast<int64_t>(i) - prev - 1);
    prev = i;
    for (uint64_t q = gap >> k; q > 0; --q) put(1);
    put(0);
    for (unsigned b = 0; b < k; ++b) put(static_cast<unsigned>((gap >> b) & 1u));
  }
  return out;
}

// The writer brings its buffer up to date by replaying the last one or two packets' coordinates
// (interleaved with the new packet's when both are sparse in a tensor) or by a full copy when a
// reader's pin forced it onto an older buffer. Random overlapping sparse sets, dense entries and
// pins held across applies drive every path; each version must equal a plain replica.
TEST(PacketSlot, CatchUpPathsMatchAPlainReplica) {
  const std::vector<uint64_t> sizes = {5000, 3001, 70};
  const Bytes m = make_typed_manifest(sizes, {EDGERT_F32, EDGERT_F16, EDGERT_F32});
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK) << edgert_last_error();
  std::vector<std::vector<float>> ref32 = {std::vector<float>(sizes[0]), {}, std::vector<float>(sizes[2])};
  std::vector<uint16_t> ref16(sizes[1]);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  const void* held = nullptr;  // a reader's pin kept across applies
  int hold_for = 0;
  for (uint64_t v = 1; v <= 120; ++v) {
    std::vector<EntrySpec> entries;
    for (uint32_t t = 0; t < sizes.size(); ++t) {
      if (uni(rng) < 0.2f) continue;
      const bool dense = uni(rng) < 0.1f;
      const float density = std::vector<float>{0.01f, 0.05f, 0.3f}[rng() % 3];
      std::vector<uint32_t> idx;
      for (uint32_t i = 0; i < sizes[t]; ++i) {
        if (dense || uni(rng) < density) idx.push_back(i);
      }
      const uint8_t index_coding = dense ? pk::kIndexDense : pk::kIndexRice;
      const Bytes index = dense ? Bytes{} : rice_encode(idx, 3);
      const uint8_t k = dense ? 0 : 3;
      if (t == 1) {  // fp16 weights: fp16 values SET copy the bits
        Bytes values(2 * idx.size());
        for (size_t j = 0; j < idx.size(); ++j) {
          const uint16_t bits = static_cast<uint16_t>(rng() & 0x7BFFu);  // finite
          pk::store_u16(values.data() + 2 * j, bits);
          ref16[idx[j]] = bits;
        }
        entries.push_back({t, index_coding, pk::kValueF16, pk::kModeSet, k, sizes[t], idx.size(), index, values});
      } else {  // fp32 weights: fp32 values ADD (one fp32 add)
        std::vector<float> vals(idx.size());
        for (size_t j = 0; j < idx.size(); ++j) {
          vals[j] = uni(rng) - 0.5f;
          ref32[t][idx[j]] = ref32[t][idx[j]] + vals[j];
        }
        entries.push_back({t, index_coding, pk::kValueF32, pk::kModeAdd, k, sizes[t], idx.size(), index,
                           f32_values(vals)});
      }
    }
    const Bytes p = build_packet(m, v - 1, v, entries);
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << "version " << v << ": "
                                                                      << edgert_last_error();
    if (held != nullptr && --hold_for == 0) {
      edgert_slot_release(slot.s, held);
      held = nullptr;
    }
    if (held == nullptr && uni(rng) < 0.3f) {  // pin this version for 1..3 applies
      ASSERT_EQ(edgert_slot_acquire(slot.s, &held, nullptr), EDGERT_OK);
      hold_for = 1 + static_cast<int>(rng() % 3);
    }
    std::vector<float> got32(sizes[0]);
    std::vector<uint16_t> got16(sizes[1]);
    std::vector<float> got32b(sizes[2]);
    ASSERT_EQ(edgert_slot_read_tensor(slot.s, 0, got32.data(), 4 * sizes[0], nullptr), EDGERT_OK);
    ASSERT_EQ(edgert_slot_read_tensor(slot.s, 1, got16.data(), 2 * sizes[1], nullptr), EDGERT_OK);
    ASSERT_EQ(edgert_slot_read_tensor(slot.s, 2, got32b.data(), 4 * sizes[2], nullptr), EDGERT_OK);
    ASSERT_EQ(std::memcmp(got32.data(), ref32[0].data(), 4 * sizes[0]), 0) << "version " << v;
    ASSERT_EQ(std::memcmp(got16.data(), ref16.data(), 2 * sizes[1]), 0) << "version " << v;
    ASSERT_EQ(std::memcmp(got32b.data(), ref32[2].data(), 4 * sizes[2]), 0) << "version " << v;
  }
  if (held != nullptr) edgert_slot_release(slot.s, held);
}

TEST(PacketSlot, AppliesValuesBitIdenticallyToSparsePatch) {
  // Random fp16/fp32 weights, then a chain of sparse (Rice) and dense entries in every value
  // coding and mode. A mirror patched with edgert_sparse_patch must match the slot bit for bit.
  const std::vector<uint64_t> sizes = {3000, 2500, 701, 1, 4096};
  const std::vector<edgert_dtype> dtypes = {EDGERT_F16, EDGERT_F32, EDGERT_F16, EDGERT_F32, EDGERT_F16};
  const Bytes m = make_typed_manifest(sizes, dtypes);
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK) << edgert_last_error();
  std::mt19937 gen(2024);
  std::normal_distribution<float> normal;
  auto random_value = [&] { return std::ldexp(normal(gen), static_cast<int>(gen() % 12) - 8); };

  // Mirror: raw bytes per tensor (fp16 bits or fp32).
  std::vector<Bytes> mirror(sizes.size());
  std::vector<EntrySpec> snapshot;
  for (uint32_t t = 0; t < sizes.size(); ++t) {
    const size_t elem = dtypes[t] == EDGERT_F16 ? 2 : 4;
    mirror[t].resize(sizes[t] * elem);
    for (uint64_t i = 0; i < sizes[t]; ++i) {
      const float v = random_value();
      if (elem == 2) {
        const uint16_t h = edgert::detail::float_to_half(v);
        std::memcpy(&mirror[t][2 * i], &h, 2);
      } else {
        std::memcpy(&mirror[t][4 * i], &v, 4);
      }
    }
    Bytes values(mirror[t].size());
    for (uint64_t i = 0; i < sizes[t]; ++i) {  // little-endian on the wire
      if (elem == 2) {
        uint16_t h;
        std::memcpy(&h, &mirror[t][2 * i], 2);
        pk::store_u16(&values[2 * i], h);
      } else {
        uint32_t b;
        std::memcpy(&b, &mirror[t][4 * i], 4);
        pk::store_u32(&values[4 * i], b);
      }
    }
    snapshot.push_back({t, pk::kIndexDense, static_cast<uint8_t>(elem == 2 ? pk::kValueF16 : pk::kValueF32),
                        pk::kModeSet, 0, sizes[t], sizes[t], {}, values});
  }
  const Bytes first = build_packet(m, 0, 1, snapshot, pk::kFlagFullSnapshot);
  ASSERT_EQ(edgert_slot_apply(slot.s, first.data(), first.size()), EDGERT_OK) << edgert_last_error();

  const uint8_t codings[] = {pk::kValueF16, pk::kValueF32, pk::kValueQ8};
  int compared = 0;
  for (uint64_t v = 2; v <= 40; ++v) {
    std::vector<EntrySpec> entries;
    for (uint32_t t = 0; t < sizes.size(); ++t) {
      if (gen() % 4 == 0) continue;  // this tensor is not in the packet
      const uint64_t n = sizes[t];
      const bool dense = gen() % 5 == 0;
      std::vector<uint32_t> idx;
      if (dense) {
        for (uint64_t i = 0; i < n; ++i) idx.push_back(static_cast<uint32_t>(i));
      } else {
        const double density = 0.005 + 0.6 * (gen() % 1000) / 1000.0;  // some beyond the slot's index store
        for (uint64_t i = 0; i < n; ++i) {
          if (std::generate_canonical<double, 32>(gen) < density) idx.push_back(static_cast<uint32_t>(i));
        }
        if (idx.empty()) idx.push_back(static_cast<uint32_t>(n - 1));
      }
      const uint8_t coding = codings[gen() % 3];
      const uint8_t mode = gen() % 2 ? pk::kModeAdd : pk::kModeSet;
      const size_t count = idx.size();
      Bytes wire;
      std::vector<uint16_t> h16(count);
      std::vector<float> f32(count);
      float scale = 0.0f;
      if (coding == pk::kValueF16) {
        wire.resize(2 * count);
        for (size_t j = 0; j < count; ++j) {
          h16[j] = edgert::detail::float_to_half(random_value());
          pk::store_u16(&wire[2 * j], h16[j]);
        }
      } else if (coding == pk::kValueF32) {
        wire.resize(4 * count);
        for (size_t j = 0; j < count; ++j) {
          f32[j] = random_value();
          uint32_t b;
          std::memcpy(&b, &f32[j], 4);
          pk::store_u32(&wire[4 * j], b);
        }
      } else {
        scale = std::ldexp(0.75f + (gen() % 1000) / 1000.0f, -static_cast<int>(gen() % 10));
        wire.resize(count);
        for (size_t j = 0; j < count; ++j) {
          const int8_t q = static_cast<int8_t>(static_cast<int>(gen() % 255) - 127);
          wire[j] = static_cast<uint8_t>(q);
          f32[j] = static_cast<float>(q) * scale;  // the documented dequantisation
        }
      }
      const unsigned k = dense ? 0 : static_cast<unsigned>(gen() % 4);
      entries.push_back({t, dense ? pk::kIndexDense : pk::kIndexRice, coding, mode, static_cast<uint8_t>(k), n, count,
                         dense ? Bytes{} : rice_encode(idx, k), wire, scale});
      const bool half_values = coding == pk::kValueF16;
      ASSERT_EQ(edgert_sparse_patch(mirror[t].data(), dtypes[t], n, idx.data(), EDGERT_U32,
                                    half_values ? static_cast<const void*>(h16.data()) : f32.data(),
                                    half_values ? EDGERT_F16 : EDGERT_F32, count,
                                    mode == pk::kModeAdd ? EDGERT_PATCH_ADD : EDGERT_PATCH_SET),
                EDGERT_OK)
          << edgert_last_error();
    }
    const Bytes p = build_packet(m, v - 1, v, entries);
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << "v" << v << ": " << edgert_last_error();
    for (uint32_t t = 0; t < sizes.size(); ++t) {
      Bytes got(mirror[t].size());
      ASSERT_EQ(edgert_slot_read_tensor(slot.s, t, got.data(), got.size(), nullptr), EDGERT_OK);
      ASSERT_EQ(got, mirror[t]) << "tensor " << t << " after v" << v;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 39 * 5);
}

}  // namespace

// ---- format 2 ------------------------------------------------------------------------

// A slot at v5 (the format 1 chain, keyed) ready for the format 2 golden packets.
class Format2 : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest = read_golden("manifest.bin");
    key = read_golden("key.bin");
    edgert_slot_free(slot.s);  // SetUp also rewinds a test to v5
    slot.s = nullptr;
    ASSERT_EQ(edgert_slot_create(manifest.data(), manifest.size(), &slot.s), EDGERT_OK);
    for (int v = 1; v <= 5; ++v) {
      if (v == 5) ASSERT_EQ(edgert_slot_set_key(slot.s, key.data(), key.size()), EDGERT_OK);
      const Bytes p = read_golden(kChain[v - 1]);
      ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << edgert_last_error();
    }
    sparse = read_golden("v2_sparse_fp16.bin");  // v5 -> v6; directory at 72: 00 02 03 00 1a | 02 02 03 00 2e | 03 00 03 01 0a
    int8 = read_golden("v2_int8.bin");           // v6 -> v7; 00 02 04 00 07 f32 | 04 02 04 00 01 f32 | 05 02 04 00 00 f32
  }
  void expect_rejected(const Bytes& p, edgert_status status, const std::string& what) {
    expect_rejected_by(slot.s, p, status, what);
  }
  Bytes payload_of(const Bytes& p) const {
    return Bytes(p.begin() + pk::kPacketHeaderBytes, p.begin() + pk::kPacketHeaderBytes + pk::load_u64(&p[64]));
  }
  // `p`'s header with a new payload, CRC and MAC.
  Bytes with_payload(const Bytes& p, const Bytes& payload) const {
    Bytes out(p.begin(), p.begin() + pk::kPacketHeaderBytes);
    pk::store_u64(out.data() + 64, payload.size());
    out.insert(out.end(), payload.begin(), payload.end());
    out.resize(out.size() + pk::kCrcBytes + pk::kMacBytes);
    reseal(out, key);
    return out;
  }
  Bytes manifest, key, sparse, int8;
  SlotPtr slot;
};

TEST_F(Format2, GoldenPacketsApplyAfterResealing) {
  // The helpers themselves are sound: an unmodified payload resealed applies.
  ASSERT_EQ(edgert_slot_apply(slot.s, with_payload(sparse, payload_of(sparse)).data(), sparse.size()), EDGERT_OK)
      << edgert_last_error();
  EXPECT_EQ(weights_of(slot.s), read_golden("weights_v6.bin"));
  ASSERT_EQ(edgert_slot_apply(slot.s, int8.data(), int8.size()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(weights_of(slot.s), read_golden("weights_v7.bin"));
}

TEST_F(Format2, EveryTruncationPoint) {
  for (size_t n = 0; n < sparse.size(); ++n) {
    expect_rejected(Bytes(sparse.begin(), sparse.begin() + n), EDGERT_ERR_PACKET_TRUNCATED,
                    "truncated to " + std::to_string(n));
  }
}

TEST_F(Format2, MalformedDirectoriesAndStreams) {
  const Bytes pay = payload_of(sparse);
  const size_t stream_at = 15;
  auto edit = [&](size_t at, std::initializer_list<uint8_t> bytes) {
    Bytes q = pay;
    size_t i = at;
    for (uint8_t b : bytes) q[i++] = b;
    return with_payload(sparse, q);
  };
  auto splice = [&](size_t at, size_t drop, const Bytes& insert) {
    Bytes q(pay.begin(), pay.begin() + at);
    q.insert(q.end(), insert.begin(), insert.end());
    q.insert(q.end(), pay.begin() + at + drop, pay.end());
    return with_payload(sparse, q);
  };
  expect_rejected(splice(0, 1, {0x80, 0x00}), EDGERT_ERR_PACKET_MALFORMED, "non-minimal varint");
  expect_rejected(splice(0, 1, Bytes(10, 0xFF)), EDGERT_ERR_PACKET_MALFORMED, "varint past 64 bits");
  expect_rejected(splice(0, 1, Bytes{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}),
                  EDGERT_ERR_PACKET_MALFORMED, "11-byte varint");
  expect_rejected(edit(0, {9}), EDGERT_ERR_PACKET_BAD_TENSOR, "tensor id out of range");
  expect_rejected(edit(5, {0}), EDGERT_ERR_PACKET_BAD_TENSOR, "duplicate tensor id");
  expect_rejected(edit(1, {pk::kIndexRice}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "Rice coding in format 2");
  expect_rejected(edit(2, {pk::kValueF16}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "raw fp16 in format 2");
  expect_rejected(edit(2, {pk::kValueF16Rans}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "FP16_RANS in format 2");
  expect_rejected(edit(3, {2}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "unknown mode");
  expect_rejected(edit(4, {0x6D}), EDGERT_ERR_PACKET_MALFORMED, "n = 109 > 108 elements");
  expect_rejected(edit(1, {pk::kIndexDense}), EDGERT_ERR_PACKET_MALFORMED, "dense with n != numel");
  expect_rejected(with_payload(sparse, Bytes(pay.begin(), pay.begin() + 3)), EDGERT_ERR_PACKET_MALFORMED,
                  "directory runs past the payload");
  expect_rejected(with_payload(sparse, Bytes(pay.begin(), pay.begin() + stream_at + 3)), EDGERT_ERR_PACKET_MALFORMED,
                  "stream shorter than 4 bytes");
  Bytes longer = pay;
  longer.push_back(0);
  expect_rejected(with_payload(sparse, longer), EDGERT_ERR_PACKET_MALFORMED, "a byte after the stream");
  expect_rejected(with_payload(sparse, Bytes(pay.begin(), pay.end() - 1)), EDGERT_ERR_PACKET_MALFORMED,
                  "stream one byte short");
  for (size_t at = stream_at; at < pay.size(); ++at) {
    Bytes q = pay;
    q[at] ^= 0x5A;
    const Bytes p = with_payload(sparse, q);
    const Bytes before = weights_of(slot.s);
    const edgert_status st = edgert_slot_apply(slot.s, p.data(), p.size());
    // A flipped byte changes the decoded symbols; it is caught unless the stream still ends exactly
    // (then the packet is well-formed and CRC/MAC are what protect its content).
    if (st == EDGERT_OK) {
      ASSERT_EQ(edgert_slot_version(slot.s), 6u);
      SetUp();  // back to v5
      continue;
    }
    EXPECT_EQ(st, EDGERT_ERR_PACKET_MALFORMED) << "flip at " << at;
    EXPECT_EQ(weights_of(slot.s), before);
  }
  expect_rejected(edit(stream_at, {0xFF, 0xFF, 0xFF, 0xFF}), EDGERT_ERR_PACKET_MALFORMED,
                  "stream starting with ff ff ff ff");
  {
    // Every byte consumed but the final code is not 0: the last byte is part of the final interval.
    Bytes q = pay;
    q.back() ^= 0x01;
    expect_rejected(with_payload(sparse, q), EDGERT_ERR_PACKET_MALFORMED, "code != 0 at the end");
    EXPECT_NE(std::string(edgert_last_error()).find("final interval"), std::string::npos) << edgert_last_error();
  }
  ASSERT_EQ(edgert_slot_apply(slot.s, sparse.data(), sparse.size()), EDGERT_OK) << edgert_last_error();
  const Bytes ipay = payload_of(int8);
  Bytes bad_scale = ipay;
  pk::store_u32(bad_scale.data() + 5, 0x7F800000u);  // +inf
  expect_rejected(with_payload(int8, bad_scale), EDGERT_ERR_PACKET_MALFORMED, "non-finite int8 scale");
  ASSERT_EQ(edgert_slot_apply(slot.s, int8.data(), int8.size()), EDGERT_OK) << edgert_last_error();
  expect_rejected(int8, EDGERT_ERR_PACKET_STALE, "replayed format 2 packet");
}

// libedgert's encoder primitives (range_coder.hpp), for tests that craft streams symbol by symbol.
struct StreamWriter {
  Bytes out;
  pk::RangeEncoder rc{&out};
  Bytes finish() {
    EXPECT_TRUE(rc.finish());
    return out;
  }
};

TEST(RangeCoder, RoundTripsGapsAndSymbols) {
  uint64_t state = 12345;
  auto next = [&]() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{1000}, size_t{5001}}) {
    std::vector<uint64_t> gaps(n);
    std::vector<uint32_t> sym16(n), sym8(n);
    for (size_t i = 0; i < n; ++i) {
      const uint64_t r = next() % 6;
      gaps[i] = r == 0 ? 0xFFFFFFFFull : r == 1 ? next() % 1000000 : r < 4 ? 0 : next() % 4;
      sym16[i] = r < 3 ? 0x1400 : static_cast<uint32_t>(next() & 0xFFFF);
      sym8[i] = static_cast<uint32_t>(next() & 0xFF);
    }
    std::vector<uint16_t> p16(pk::kTree16Contexts, pk::kProbInit), p8(pk::kTree8Contexts, pk::kProbInit);
    pk::GapModel g;
    g.reset();
    StreamWriter enc;
    for (size_t i = 0; i < n; ++i) {
      g.encode_v(enc.rc, gaps[i] + 1);
      pk::encode_tree<16>(enc.rc, p16.data(), sym16[i]);
      pk::encode_tree<8>(enc.rc, p8.data(), sym8[i]);
    }
    const Bytes stream = enc.finish();
    pk::RangeDecoder rc;
    ASSERT_TRUE(rc.init(stream.data(), stream.size()));
    pk::reset_probs(p16.data(), pk::kTree16Contexts);
    pk::reset_probs(p8.data(), pk::kTree8Contexts);
    g.reset();
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(g.decode_v(rc) - 1, gaps[i]) << "n " << n << " i " << i;
      ASSERT_EQ(pk::decode_tree<16>(rc, p16.data()), sym16[i]);
      ASSERT_EQ(pk::decode_tree<8>(rc, p8.data()), sym8[i]);
    }
    EXPECT_TRUE(rc.finished()) << "n " << n;
    pk::RangeDecoder longer;  // the same stream with a byte less does not finish
    if (stream.size() > 4) {
      ASSERT_TRUE(longer.init(stream.data(), stream.size() - 1));
      pk::reset_probs(p16.data(), pk::kTree16Contexts);
      pk::reset_probs(p8.data(), pk::kTree8Contexts);
      g.reset();
      for (size_t i = 0; i < n; ++i) {
        g.decode_v(longer);
        pk::decode_tree<16>(longer, p16.data());
        pk::decode_tree<8>(longer, p8.data());
      }
      EXPECT_FALSE(longer.finished());
    }
  }
}

TEST_F(Format2, IndexOutOfRangeIsRejected) {
  // conv.weight (108 elements): one coordinate whose gap puts it at index `at`.
  for (uint64_t at : {uint64_t{108}, uint64_t{1} << 31, uint64_t{0xFFFFFFFE}, uint64_t{107}}) {  // valid last
    pk::GapModel g;
    g.reset();
    std::vector<uint16_t> p16(pk::kTree16Contexts, pk::kProbInit);
    StreamWriter enc;
    g.encode_v(enc.rc, at + 1);
    pk::encode_tree<16>(enc.rc, p16.data(), 0x3C00);  // 1.0
    Bytes payload = {0x00, pk::kIndexGapAc, pk::kValueF16Ac, pk::kModeAdd, 0x01};
    const Bytes stream = enc.finish();
    payload.insert(payload.end(), stream.begin(), stream.end());
    Bytes p = with_payload(sparse, payload);
    pk::store_u32(p.data() + 56, 1);  // one entry
    reseal(p, key);
    if (at < 108) {
      ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << edgert_last_error();
    } else {
      expect_rejected(p, EDGERT_ERR_PACKET_MALFORMED, "index " + std::to_string(at));
    }
  }
}

// ---- format 2 encoder (packet/encode_v2.hpp) -------------------------------------------

TEST(RangeCoder, EncoderMatchesTheReferenceOnKnownStreams) {
  // Streams of python/edgert/updates/rangecoder.py (encode_symbols; GapModel + TreeModel(16)).
  auto stream_hex = [](StreamWriter& w) {
    const Bytes b = w.finish();
    return hex(b.data(), b.size());
  };
  StreamWriter empty;
  EXPECT_EQ(stream_hex(empty), "00000000");
  std::vector<uint16_t> p8(pk::kTree8Contexts, pk::kProbInit), p16(pk::kTree16Contexts, pk::kProbInit);
  StreamWriter bytes;
  for (uint32_t s : {1u, 2u, 3u}) pk::encode_tree<8>(bytes.rc, p8.data(), s);
  EXPECT_EQ(stream_hex(bytes), "01030ed22720");
  StreamWriter halves;
  for (uint32_t s : {0x3C00u, 0xBC00u, 0x3C00u, 0x0001u, 0xFFFFu}) pk::encode_tree<16>(halves.rc, p16.data(), s);
  EXPECT_EQ(stream_hex(halves), "3c00b8403a716304d5bdffa000");
  pk::reset_probs(p16.data(), pk::kTree16Contexts);
  pk::GapModel g;
  g.reset();
  StreamWriter gaps;  // a run of ff bytes waiting for a carry
  const std::pair<uint64_t, uint32_t> coded[] = {{0, 0x3C00}, {0xFFFFFFFFull, 0x1234}, {1, 0}, {1ull << 31, 0xFFFF}};
  for (const auto& [gap, symbol] : coded) {
    g.encode_v(gaps.rc, gap + 1);
    pk::encode_tree<16>(gaps.rc, p16.data(), symbol);
  }
  EXPECT_EQ(stream_hex(gaps), "1e0077ffffff880000000908134091abffff262d80019869d7a80000");
}

namespace {

// The directory of a format 2 payload, parsed as far as the stream needs it (test-side, well-formed input).
struct Directory {
  std::vector<pk::Entry> entries;
  size_t stream_at = 0;
};

Directory parse_directory(const Bytes& pay, uint32_t count) {
  Directory d;
  size_t pos = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (unsigned shift = 0;; shift += 7) {
      const uint8_t b = pay.at(pos++);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  for (uint32_t j = 0; j < count; ++j) {
    pk::Entry e{};
    e.tensor_id = static_cast<uint32_t>(varint());
    e.index_coding = pay.at(pos++);
    e.value_coding = pay.at(pos++);
    e.mode = pay.at(pos++);
    e.count = varint();
    if (e.value_coding == pk::kValueQ8Ac) pos += 4;  // scale
    if (pk::is_block_coding(e.value_coding)) pos += 2 * pk::block_count(e.count);  // block scales
    d.entries.push_back(e);
  }
  d.stream_at = pos;
  return d;
}

// What libedgert's decoder reads from a stream: per entry the indices (sparse) and the raw values.
struct DecodedStream {
  std::vector<std::vector<int64_t>> indices;
  std::vector<Bytes> values;
};

edgert_status decode_all(const std::vector<pk::Entry>& entries, const pk::Manifest& m, const Bytes& stream,
                         DecodedStream* out) {
  out->indices.assign(entries.size(), {});
  out->values.assign(entries.size(), {});
  std::vector<uint16_t> p16(pk::kTree16Contexts), p8(pk::kTree8Contexts);
  return pk::decode_stream_v2(
      entries.data(), static_cast<uint32_t>(entries.size()), m, stream.data(), stream.size(), p16.data(), p8.data(),
      [&](uint32_t e, const uint32_t* idx, uint64_t, const uint8_t* raw, size_t n) {
        if (idx != nullptr) out->indices[e].insert(out->indices[e].end(), idx, idx + n);
        const size_t width = entries[e].value_coding == pk::kValueF16Ac ? 2 : 1;
        out->values[e].insert(out->values[e].end(), raw, raw + width * n);
      });
}

// The encoder's view of decoded entry j (4-bit q go back from sign-extended bytes to nibbles, in place).
pk::StreamEntryV2 stream_entry(const pk::Entry& e, DecodedStream& d, size_t j, uint64_t numel) {
  const bool q4 = e.value_coding == pk::kValueQ4BlockAc;
  if (q4) {
    for (uint8_t& q : d.values[j]) q &= 0x0F;
  }
  return {e.value_coding == pk::kValueF16Ac ? 16u : q4 ? 4u : 8u, e.index_coding == pk::kIndexGapAc,
          d.values[j].data(), e.count, d.indices[j].data(), numel};
}


TEST_F(Format2, GoldenStreamsReencodeByteForByte) {
  pk::Manifest m;
  ASSERT_EQ(pk::parse_manifest(manifest.data(), manifest.size(), &m), EDGERT_OK) << edgert_last_error();
  const Bytes int4b = read_golden("v2_int4b.bin"), int8b = read_golden("v2_int8b.bin");
  for (const Bytes* packet : std::vector<const Bytes*>{&sparse, &int8, &int4b, &int8b}) {
    const Bytes pay = payload_of(*packet);
    const Directory d = parse_directory(pay, pk::load_u32(packet->data() + 56));
    const Bytes golden_stream(pay.begin() + static_cast<ptrdiff_t>(d.stream_at), pay.end());
    DecodedStream decoded;
    ASSERT_EQ(decode_all(d.entries, m, golden_stream, &decoded), EDGERT_OK) << edgert_last_error();
    std::vector<pk::StreamEntryV2> spec;
    for (size_t j = 0; j < d.entries.size(); ++j) {
      spec.push_back(stream_entry(d.entries[j], decoded, j, m.tensors[d.entries[j].tensor_id].numel));
    }
    Bytes stream;
    ASSERT_EQ(pk::encode_stream_v2(spec.data(), spec.size(), &stream), EDGERT_OK) << edgert_last_error();
    EXPECT_EQ(hex(stream.data(), stream.size()), hex(golden_stream.data(), golden_stream.size()));
  }
}

TEST(Format2Blocks, TruncationsAndBadScalesLeaveTheSlot) {
  const Bytes m = read_golden("manifest.bin"), key = read_golden("key.bin");
  SlotPtr slot;
  ASSERT_EQ(edgert_slot_create(m.data(), m.size(), &slot.s), EDGERT_OK);
  for (int v = 1; v <= 11; ++v) {
    if (v == 5) ASSERT_EQ(edgert_slot_set_key(slot.s, key.data(), key.size()), EDGERT_OK);
    const Bytes p = read_golden(kChain[v - 1]);
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << edgert_last_error();
  }
  const Bytes p = read_golden("v2_int4b.bin");  // v11 -> v12; directory at 72: 00 02 09 00 1a, one block scale | ...
  ASSERT_EQ(p[72 + 2], pk::kValueQ4BlockAc);
  for (size_t n = 0; n < p.size(); ++n) {
    expect_rejected_by(slot.s, Bytes(p.begin(), p.begin() + n), EDGERT_ERR_PACKET_TRUNCATED,
                       "truncated to " + std::to_string(n));
  }
  Bytes bad = p;
  bad[72 + 5 + 1] = 0xFC;  // the block scale's exponent all ones
  reseal(bad, key);
  expect_rejected_by(slot.s, bad, EDGERT_ERR_PACKET_MALFORMED, "non-finite block scale");
  bad = p;
  bad[72 + 2] = pk::kValueQ4Block;  // a format 1 coding in a format 2 directory
  reseal(bad, key);
  expect_rejected_by(slot.s, bad, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "format 1 coding in format 2");
  bad = p;
  bad[72 + 4] = 0x1B;  // n = 27: still one block scale, but the stream holds 26 coordinates
  reseal(bad, key);
  expect_rejected_by(slot.s, bad, EDGERT_ERR_PACKET_MALFORMED, "count past the stream");
  ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(weights_of(slot.s), read_golden("weights_v12.bin"));
}

TEST(EncodeStreamV2, RoundTripsThroughTheDecoder) {
  std::mt19937_64 gen(20240611);
  struct Case {
    uint64_t numel;
    bool sparse;
    unsigned bits;
    std::vector<int64_t> indices;
    Bytes symbols;
  };
  std::vector<Case> cases;
  auto random_symbols = [&](size_t n, unsigned bits, bool peaked) {
    Bytes s(n * bits / 8);
    for (uint8_t& b : s) b = static_cast<uint8_t>(peaked ? (gen() % 3 == 0 ? 0x3C : 0x00) : gen());
    return s;
  };
  cases.push_back({1, false, 16, {}, random_symbols(1, 16, false)});                    // dense, one element
  cases.push_back({0, false, 8, {}, {}});                                               // empty tensor
  cases.push_back({1ull << 32, true, 16, {0xFFFFFFFFll}, random_symbols(1, 16, false)});  // gap 2^32 - 1
  cases.push_back({1ull << 32, true, 8, {0, 0xFFFFFFFFll}, random_symbols(2, 8, false)});  // gap 2^32 - 2
  cases.push_back({1000, true, 16, {}, {}});                                             // sparse, no coordinate
  cases.push_back({1ull << 32, true, 16, {(1ll << 30) - 1, (1ll << 31) + (1ll << 30) - 1},
                   random_symbols(2, 16, false)});
  cases.push_back({1ull << 32, true, 8, {(1ll << 31) - 1, (1ll << 32) - 1}, random_symbols(2, 8, false)});
  cases.push_back({1ull << 32, true, 8, {1ll << 31}, random_symbols(1, 8, false)});
  {
    Case bucket{0, true, 8, {}, {}};  // gaps at the bucket boundaries 0, 1, 2^k - 1, 2^k (k < 30; larger below)
    int64_t at = -1;
    for (unsigned k = 0; k < 30; ++k) {
      for (uint64_t gap : {uint64_t{0}, (uint64_t{1} << k) - 1, uint64_t{1} << k}) {
        at += static_cast<int64_t>(gap) + 1;
        bucket.indices.push_back(at);
      }
    }
    bucket.numel = static_cast<uint64_t>(at) + 1;
    bucket.symbols = random_symbols(bucket.indices.size(), 8, false);
    cases.push_back(bucket);
  }
  {
    Case all{65536, false, 16, {}, Bytes(2 * 65536)};  // every fp16 pattern
    for (uint32_t x = 0; x < 65536; ++x) pk::store_u16(&all.symbols[2 * x], static_cast<uint16_t>(x));
    cases.push_back(all);
  }
  for (int r = 0; r < 6; ++r) {  // random sparse / dense, peaked / uniform values, both widths
    Case c{1 + gen() % 20000, r % 2 == 0, r % 3 == 0 ? 8u : 16u, {}, {}};
    for (uint64_t i = 0; c.sparse && i < c.numel; ++i) {
      if (gen() % 20 == 0) c.indices.push_back(static_cast<int64_t>(i));
    }
    c.symbols = random_symbols(c.sparse ? c.indices.size() : c.numel, c.bits, r >= 3);
    cases.push_back(c);
  }
  cases.push_back({50, false, 8, {}, Bytes(50, 0x7F)});  // all-equal symbols

  // One stream over all cases (models shared across entries), then each case alone.
  for (size_t only = 0; only <= cases.size(); ++only) {
    const size_t first = only == cases.size() ? 0 : only;
    const size_t last = only == cases.size() ? cases.size() : only + 1;
    pk::Manifest m;
    std::vector<pk::Entry> entries;
    std::vector<pk::StreamEntryV2> spec;
    for (size_t c = first; c < last; ++c) {
      const Case& k = cases[c];
      pk::TensorDesc t{};
      t.numel = k.numel;
      m.tensors.push_back(t);
      pk::Entry e{};
      e.tensor_id = static_cast<uint32_t>(m.tensors.size() - 1);
      e.index_coding = k.sparse ? pk::kIndexGapAc : pk::kIndexDense;
      e.value_coding = k.bits == 16 ? pk::kValueF16Ac : pk::kValueQ8Ac;
      e.count = k.sparse ? k.indices.size() : k.numel;
      entries.push_back(e);
      spec.push_back({k.bits, k.sparse, k.symbols.data(), e.count, k.indices.data(), k.numel});
    }
    Bytes stream;
    ASSERT_EQ(pk::encode_stream_v2(spec.data(), spec.size(), &stream), EDGERT_OK) << edgert_last_error();
    ASSERT_GE(stream.size(), 4u);
    DecodedStream decoded;
    ASSERT_EQ(decode_all(entries, m, stream, &decoded), EDGERT_OK) << "case " << only << ": " << edgert_last_error();
    for (size_t c = first; c < last; ++c) {
      EXPECT_EQ(decoded.indices[c - first], cases[c].indices) << "case " << c;
      EXPECT_EQ(decoded.values[c - first], cases[c].symbols) << "case " << c;
    }
  }
}

TEST(EncodeStreamV2, RejectsInvalidEntriesAndLeavesTheOutput) {
  const Bytes sym(8, 0x11);
  const int64_t sorted[] = {1, 5, 9};
  const int64_t negative[] = {-1, 5};
  const int64_t repeated[] = {1, 5, 5};
  const int64_t descending[] = {5, 1};
  const int64_t past[] = {3, 10};
  const int64_t far[] = {0x100000000ll};  // gap 2^32
  struct Case {
    pk::StreamEntryV2 e;
    edgert_status status;
    const char* what;
  };
  const Case cases[] = {
      {{12, false, sym.data(), 2, nullptr, 2}, EDGERT_ERR_INVALID_ARGUMENT, "value bits 12"},
      {{16, false, nullptr, 2, nullptr, 2}, EDGERT_ERR_INVALID_ARGUMENT, "no symbols"},
      {{16, true, sym.data(), 2, nullptr, 10}, EDGERT_ERR_INVALID_ARGUMENT, "sparse without indices"},
      {{16, false, sym.data(), 3, nullptr, 4}, EDGERT_ERR_SHAPE, "dense with count != numel"},
      {{8, true, sym.data(), 2, negative, 10}, EDGERT_ERR_INDEX_OUT_OF_RANGE, "negative index"},
      {{8, true, sym.data(), 2, past, 10}, EDGERT_ERR_INDEX_OUT_OF_RANGE, "index == numel"},
      {{8, true, sym.data(), 3, repeated, 10}, EDGERT_ERR_INDEX_UNSORTED, "repeated index"},
      {{8, true, sym.data(), 2, descending, 10}, EDGERT_ERR_INDEX_UNSORTED, "descending indices"},
      {{8, true, sym.data(), 1, far, 1ull << 33}, EDGERT_ERR_INDEX_OUT_OF_RANGE, "gap of 2^32"},
  };
  const pk::StreamEntryV2 good{8, true, sym.data(), 3, sorted, 10};
  for (const Case& c : cases) {
    for (size_t at : {size_t{0}, size_t{1}}) {  // alone, and after a valid entry
      const pk::StreamEntryV2 list[] = {at ? good : c.e, c.e};
      Bytes out = {0xAB};
      EXPECT_EQ(pk::encode_stream_v2(list + (at ? 0 : 1), at + 1, &out), c.status) << c.what;
      EXPECT_EQ(out, Bytes{0xAB}) << c.what;
      const std::string message = edgert_last_error();
      EXPECT_NE(message.find("entry " + std::to_string(at)), std::string::npos) << c.what << ": " << message;
    }
  }
  Bytes out = {0xAB};
  ASSERT_EQ(pk::encode_stream_v2(nullptr, 0, &out), EDGERT_OK);
  EXPECT_EQ(out, (Bytes{0, 0, 0, 0}));
  EXPECT_EQ(pk::encode_stream_v2(&good, 1, nullptr), EDGERT_ERR_INVALID_ARGUMENT);
}

// ---- format 3 (static-table rANS) ------------------------------------------------------

class Format3 : public Format2 {
 protected:
  void SetUp() override {
    Format2::SetUp();
    for (int v = 6; v <= 7; ++v) {
      const Bytes p = read_golden(kChain[v - 1]);
      ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << edgert_last_error();
    }
    sparse = read_golden("v3_sparse_fp16.bin");  // v7 -> v8; directory: 00 03 05 00 12 | 02 03 05 00 05 | 03 00 05 01 0a
    int8 = read_golden("v3_int8.bin");           // v8 -> v9; 00 03 06 00 05 f32 | 04 03 06 00 01 f32 | 05 03 06 00 00 f32
  }
  // Offset of the rANS stream in a format 3 payload: the directory, then `tables` tables.
  static size_t stream_offset(const Bytes& pay, size_t directory, const std::vector<unsigned>& tables) {
    const uint8_t* cur = pay.data() + directory;
    uint64_t remaining = pay.size() - directory;
    pk::RansTable t;
    for (unsigned id : tables) EXPECT_TRUE(pk::read_rans_table(&cur, &remaining, pk::rans_alphabet(id), &t));
    return static_cast<size_t>(cur - pay.data());
  }
};

TEST_F(Format3, GoldenPacketsApplyAfterResealing) {
  ASSERT_EQ(edgert_slot_apply(slot.s, with_payload(sparse, payload_of(sparse)).data(), sparse.size()), EDGERT_OK)
      << edgert_last_error();
  EXPECT_EQ(weights_of(slot.s), read_golden("weights_v8.bin"));
  ASSERT_EQ(edgert_slot_apply(slot.s, int8.data(), int8.size()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(weights_of(slot.s), read_golden("weights_v9.bin"));
  expect_rejected(int8, EDGERT_ERR_PACKET_STALE, "replayed format 3 packet");
}

TEST_F(Format3, EveryTruncationPoint) {
  for (const Bytes* p : {&sparse, &int8}) {
    for (size_t n = 0; n < p->size(); ++n) {
      expect_rejected(Bytes(p->begin(), p->begin() + n), EDGERT_ERR_PACKET_TRUNCATED,
                      "truncated to " + std::to_string(n));
    }
  }
}

TEST_F(Format3, MalformedDirectoriesTablesAndStreams) {
  const Bytes pay = payload_of(sparse);
  std::vector<unsigned> all_fp16;
  for (unsigned c = 0; c < pk::kGapContexts; ++c) all_fp16.push_back(pk::kTableGap + c);
  for (unsigned c = 0; c < pk::kHiContexts; ++c) all_fp16.push_back(pk::kTableHi + c);
  all_fp16.push_back(pk::kTableLo);
  const size_t mode_at = 15;  // after the directory: the fp16 hi mode byte (0 plain, 1 delta)
  const size_t tables_at = mode_at + 1;
  const size_t stream_at = stream_offset(pay, tables_at, all_fp16);
  auto edit = [&](size_t at, std::initializer_list<uint8_t> bytes) {
    Bytes q = pay;
    size_t i = at;
    for (uint8_t b : bytes) q[i++] = b;
    return with_payload(sparse, q);
  };
  auto splice = [&](size_t at, size_t drop, const Bytes& insert) {
    Bytes q(pay.begin(), pay.begin() + at);
    q.insert(q.end(), insert.begin(), insert.end());
    q.insert(q.end(), pay.begin() + at + drop, pay.end());
    return with_payload(sparse, q);
  };
  expect_rejected(edit(1, {pk::kIndexGapAc}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "GAP_AC in format 3");
  expect_rejected(edit(2, {pk::kValueF16Ac}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "FP16_AC in format 3");
  expect_rejected(edit(2, {pk::kValueQ8BlockRans + 1}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "unknown value coding");
  // Format 3 has its own block codings (11, 12): format 1's and format 2's ids are not accepted in its directory.
  for (uint8_t block : {pk::kValueQ4Block, pk::kValueQ8Block, pk::kValueQ4BlockAc, pk::kValueQ8BlockAc}) {
    const Bytes p = edit(2, {block});
    ASSERT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION);
    EXPECT_NE(std::string(edgert_last_error()).find("value codings 5, 6, 11 and 12"), std::string::npos)
        << edgert_last_error();
    expect_rejected(p, EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "format 1/2 block coding in format 3");
  }
  expect_rejected(edit(mode_at, {2}), EDGERT_ERR_PACKET_UNSUPPORTED_VERSION, "unknown fp16 hi mode");
  expect_rejected(edit(mode_at, {static_cast<uint8_t>(pay[mode_at] ^ 1)}), EDGERT_ERR_PACKET_MALFORMED,
                  "the other hi mode decodes to another stream");
  expect_rejected(with_payload(sparse, Bytes(pay.begin(), pay.begin() + mode_at)), EDGERT_ERR_PACKET_MALFORMED,
                  "payload ends before the hi mode byte");
  expect_rejected(edit(5, {0}), EDGERT_ERR_PACKET_BAD_TENSOR, "duplicate tensor id");
  expect_rejected(edit(4, {0x6D}), EDGERT_ERR_PACKET_MALFORMED, "n = 109 > 108 elements");
  // Tables: the gap table's first frequency +1 (sum 4097), a zero run past the alphabet, two runs in a row.
  expect_rejected(edit(tables_at, {static_cast<uint8_t>(pay[tables_at] + 1)}), EDGERT_ERR_PACKET_MALFORMED,
                  "table sum != 4096");
  expect_rejected(splice(tables_at, stream_at - tables_at, Bytes{0x80, 0x20, 0x00, 90}), EDGERT_ERR_PACKET_MALFORMED,
                  "zero run past the gap alphabet");
  expect_rejected(splice(tables_at, 0, Bytes{0x00, 0x00}), EDGERT_ERR_PACKET_MALFORMED, "zero run then zero run");
  expect_rejected(splice(tables_at, 0, Bytes{0x81, 0x20}), EDGERT_ERR_PACKET_MALFORMED, "frequency 4097");
  expect_rejected(with_payload(sparse, Bytes(pay.begin(), pay.begin() + stream_at + 11)),
                  EDGERT_ERR_PACKET_MALFORMED, "stream shorter than its states");
  expect_rejected(edit(stream_at + 2, {0, 0}), EDGERT_ERR_PACKET_MALFORMED, "initial state below 2^16");
  Bytes longer = pay;
  longer.push_back(0);
  longer.push_back(0);
  expect_rejected(with_payload(sparse, longer), EDGERT_ERR_PACKET_MALFORMED, "a word after the stream");
  EXPECT_NE(std::string(edgert_last_error()).find("after the last symbol"), std::string::npos) << edgert_last_error();
  expect_rejected(with_payload(sparse, Bytes(pay.begin(), pay.end() - 2)), EDGERT_ERR_PACKET_MALFORMED,
                  "stream one word short");
  for (size_t at = stream_at; at < pay.size(); ++at) {
    Bytes q = pay;
    q[at] ^= 0x5A;
    const Bytes p = with_payload(sparse, q);
    const Bytes before = weights_of(slot.s);
    const edgert_status st = edgert_slot_apply(slot.s, p.data(), p.size());
    if (st == EDGERT_OK) {  // still ends in the initial states: well-formed, CRC/MAC protect the content
      ASSERT_EQ(edgert_slot_version(slot.s), 8u);
      SetUp();
      continue;
    }
    EXPECT_EQ(st, EDGERT_ERR_PACKET_MALFORMED) << "flip at " << at;
    EXPECT_EQ(weights_of(slot.s), before);
  }
  ASSERT_EQ(edgert_slot_apply(slot.s, sparse.data(), sparse.size()), EDGERT_OK) << edgert_last_error();
  const Bytes ipay = payload_of(int8);
  Bytes bad_scale = ipay;
  pk::store_u32(bad_scale.data() + 5, 0x7F800000u);  // +inf
  expect_rejected(with_payload(int8, bad_scale), EDGERT_ERR_PACKET_MALFORMED, "non-finite int8 scale");
}

// A table as the spec serialises it (varints; a maximal zero run r as 0, r - 1).
Bytes write_table(const std::vector<uint32_t>& f) {
  Bytes out;
  auto varint = [&](uint64_t x) {
    do {
      const uint8_t b = x & 0x7F;
      x >>= 7;
      out.push_back(static_cast<uint8_t>(b | (x ? 0x80 : 0)));
    } while (x);
  };
  for (size_t i = 0; i < f.size();) {
    if (f[i]) {
      varint(f[i++]);
      continue;
    }
    size_t j = i;
    while (j < f.size() && f[j] == 0) ++j;
    varint(0);
    varint(j - i - 1);
    i = j;
  }
  return out;
}

TEST(RansCoder, RoundTripsSymbolsAndRawBitsOnThreeStates) {
  std::mt19937 rng(7);
  for (unsigned trial = 0; trial < 20; ++trial) {
    // A random table over 256 symbols (some zero), frequencies summing to 4096.
    std::vector<uint32_t> f(256, 0);
    const unsigned used = 1 + rng() % 256;
    for (unsigned i = 0; i < used; ++i) f[rng() % 256] += 1;
    uint32_t sum = 0;
    for (uint32_t x : f) sum += x;
    std::vector<uint32_t> start(256, 0);
    uint32_t acc = 0;
    for (unsigned s = 0; s < 256; ++s) {
      f[s] = f[s] * (4096 / sum);
      acc += f[s];
    }
    for (unsigned s = 0; s < 256; ++s) {
      if (f[s]) {
        f[s] += 4096 - acc;
        break;
      }
    }
    acc = 0;
    for (unsigned s = 0; s < 256; ++s) {
      start[s] = acc;
      acc += f[s];
    }
    ASSERT_EQ(acc, 4096u);
    const Bytes table = write_table(f);
    const uint8_t* cur = table.data();
    uint64_t remaining = table.size();
    pk::RansTable decode_table;
    ASSERT_TRUE(pk::read_rans_table(&cur, &remaining, 256, &decode_table));
    EXPECT_EQ(remaining, 0u);
    // Steps: symbols on states 1 and 2, raw chunks of 1..12 bits on state 0; n = 0 and 1 included.
    const size_t n = trial == 0 ? 0 : trial == 1 ? 1 : 1 + rng() % 3000;
    std::vector<uint8_t> states;
    std::vector<uint16_t> starts, freqs;
    std::vector<uint32_t> expect;
    std::vector<unsigned> widths;
    for (size_t i = 0; i < n; ++i) {
      const unsigned kind = rng() % 3;
      if (kind == 0) {
        const unsigned bits = 1 + rng() % 12;
        const uint32_t r = rng() & ((1u << bits) - 1);
        states.push_back(0);
        starts.push_back(static_cast<uint16_t>(r << (12 - bits)));
        freqs.push_back(static_cast<uint16_t>(1u << (12 - bits)));
        expect.push_back(r);
        widths.push_back(bits);
      } else {
        unsigned s;
        do s = rng() % 256; while (f[s] == 0);
        states.push_back(static_cast<uint8_t>(kind));
        starts.push_back(static_cast<uint16_t>(start[s]));
        freqs.push_back(static_cast<uint16_t>(f[s]));
        expect.push_back(s);
        widths.push_back(0);
      }
    }
    Bytes stream;
    ASSERT_EQ(pk::encode_rans_v3(states.data(), starts.data(), freqs.data(), n, &stream), EDGERT_OK);
    pk::RansDecoder dec;
    ASSERT_TRUE(dec.init(stream.data(), stream.size()));
    for (size_t i = 0; i < n; ++i) {
      const uint32_t got = states[i] == 0   ? dec.raw<0>(widths[i])
                           : states[i] == 1 ? dec.symbol<1>(decode_table)
                                            : dec.symbol<2>(decode_table);
      ASSERT_EQ(got, expect[i]) << "trial " << trial << " step " << i;
    }
    EXPECT_TRUE(dec.finished()) << "trial " << trial;
  }
}

TEST(RansCoder, EncoderRejectsInvalidStepsAndLeavesTheOutput) {
  Bytes out{1, 2, 3};
  const uint8_t s_ok = 0, s_bad = 3;
  const uint16_t zero = 0, one = 1, big = 4097, start = 4000, f97 = 97;
  EXPECT_EQ(pk::encode_rans_v3(&s_bad, &zero, &one, 1, &out), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(pk::encode_rans_v3(&s_ok, &zero, &zero, 1, &out), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(pk::encode_rans_v3(&s_ok, &zero, &big, 1, &out), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(pk::encode_rans_v3(&s_ok, &start, &f97, 1, &out), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(edgert_last_error()).find("step 0"), std::string::npos);
  EXPECT_EQ(pk::encode_rans_v3(nullptr, nullptr, nullptr, 1, &out), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(out, (Bytes{1, 2, 3}));
  ASSERT_EQ(pk::encode_rans_v3(nullptr, nullptr, nullptr, 0, &out), EDGERT_OK);
  EXPECT_EQ(out, (Bytes{0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0}));  // three states at 2^16, no words
}

}  // namespace
