// Release signatures in the slot: the golden signed packets of tests/data/signed (the same files and
// expected statuses as tests/test_signing.py), and corruption of the network-facing signature block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "edgert/edgert.h"
#include "golden.hpp"
#include "packet/bytes.hpp"
#include "packet/crc32c.hpp"
#include "packet/signature.hpp"

namespace {

namespace pk = edgert::packet;
using edgert_test::Bytes;
using edgert_test::SlotPtr;
using edgert_test::weights_of;

edgert_trust trust_from(const std::string& key_file, uint64_t root_version, uint64_t floor, uint64_t now) {
  edgert_trust t{};
  const Bytes key = edgert_test::read_test_data("signed", key_file);
  EXPECT_EQ(key.size(), sizeof(t.root_key));
  std::memcpy(t.root_key, key.data(), sizeof(t.root_key));
  t.root_version = root_version;
  t.min_release_version = floor;
  t.fixed_time = now;
  return t;
}

void make_slot(SlotPtr* slot) {
  const Bytes manifest = edgert_test::read_test_data("packets", "manifest.bin");
  ASSERT_EQ(edgert_slot_create(manifest.data(), manifest.size(), &slot->s), EDGERT_OK);
}

// The packet with an HMAC under `key` (as edgert.updates.authenticate): flag, CRC, MAC over body and CRC.
Bytes authenticate(const Bytes& packet, const Bytes& key) {
  Bytes p(packet.begin(), packet.end() - 4);
  p[6] |= 1;
  const uint32_t crc = edgert_crc32c(0, p.data(), p.size());
  for (int i = 0; i < 4; ++i) p.push_back(static_cast<uint8_t>(crc >> (8 * i)));
  uint8_t mac[32];
  EXPECT_EQ(edgert_hmac_sha256(key.data(), key.size(), p.data(), p.size(), mac), EDGERT_OK);
  p.insert(p.end(), mac, mac + 32);
  return p;
}

// How a packet reaches the slot: whole (edgert_slot_apply), or fed to a receiver in pieces of `piece` bytes
// and applied with edgert_slot_apply_received; with `key` every packet carries an HMAC the slot checks.
struct Delivery {
  size_t piece = 0;  // 0: edgert_slot_apply
  Bytes key;
};

edgert_status deliver(edgert_slot* slot, edgert_receiver* receiver, const Delivery& d, const Bytes& packet) {
  if (d.piece == 0) return edgert_slot_apply(slot, packet.data(), packet.size());
  for (size_t at = 0; at < packet.size(); at += d.piece) {
    edgert_receiver_update(receiver, packet.data() + at, std::min(d.piece, packet.size() - at));
  }
  return edgert_slot_apply_received(slot, receiver, packet.data(), packet.size());
}

void run_golden_cases(const Delivery& d) {
  SlotPtr slot;
  make_slot(&slot);
  if (!d.key.empty()) ASSERT_EQ(edgert_slot_set_key(slot.s, d.key.data(), d.key.size()), EDGERT_OK);
  edgert_receiver* receiver = nullptr;
  ASSERT_EQ(edgert_slot_receiver_create(slot.s, &receiver), EDGERT_OK);
  const Bytes cases = edgert_test::read_test_data("signed", "cases.txt");
  std::istringstream in(std::string(cases.begin(), cases.end()));
  std::string line;
  uint64_t now = 0;
  int applied = 0;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string word, a;
    words >> word >> a;
    if (word == "now") {
      now = std::stoull(a);
    } else if (word == "trust" || word == "expect_trust") {
      uint64_t root_version = 0, floor = 0;
      words >> root_version >> floor;
      const edgert_trust want = trust_from(a, root_version, floor, now);
      if (word == "trust") {
        ASSERT_EQ(edgert_slot_set_trust(slot.s, &want), EDGERT_OK);
        continue;
      }
      edgert_trust got{};
      ASSERT_EQ(edgert_slot_get_trust(slot.s, &got), EDGERT_OK);
      EXPECT_EQ(std::memcmp(got.root_key, want.root_key, sizeof(got.root_key)), 0) << "rotated root key";
      EXPECT_EQ(got.root_version, want.root_version);
      EXPECT_EQ(got.min_release_version, want.min_release_version);
    } else if (word == "apply") {
      std::string expected;
      words >> expected;
      const Bytes raw = edgert_test::read_test_data("signed", a);
      const Bytes packet = d.key.empty() ? raw : authenticate(raw, d.key);
      const Bytes before = weights_of(slot.s);
      const uint64_t version = edgert_slot_version(slot.s);
      const edgert_status st = deliver(slot.s, receiver, d, packet);
      EXPECT_EQ(std::string(edgert_status_name(st)), expected) << a << ": " << edgert_last_error();
      if (st != EDGERT_OK) {
        EXPECT_EQ(weights_of(slot.s), before) << a;
        EXPECT_EQ(edgert_slot_version(slot.s), version) << a;
      } else {
        const uint64_t v = edgert_slot_version(slot.s);
        EXPECT_EQ(weights_of(slot.s), edgert_test::read_test_data("packets", "weights_v" + std::to_string(v) + ".bin")) << a;
      }
      ++applied;
    }
  }
  EXPECT_EQ(applied, 12);
  EXPECT_EQ(edgert_slot_version(slot.s), 3u);
  edgert_receiver_free(receiver);
}

TEST(Signing, GoldenCasesGetTheirStatusAndRejectionsChangeNothing) {
  if (!edgert_signatures_available()) GTEST_SKIP() << "built without EDGERT_SIGNATURES";
  run_golden_cases(Delivery{});
}

TEST(Signing, PacketsHashedOnArrivalGetTheSameStatusesWithAndWithoutMac) {
  if (!edgert_signatures_available()) GTEST_SKIP() << "built without EDGERT_SIGNATURES";
  const Bytes key(32, 0x6b);
  for (size_t piece : {size_t{1}, size_t{7}, size_t{71}, size_t{72}, size_t{65536}}) {
    SCOPED_TRACE("pieces of " + std::to_string(piece));
    run_golden_cases(Delivery{piece, {}});
    run_golden_cases(Delivery{piece, key});
  }
}

TEST(Signing, AReceiverFedOtherBytesIsRefusedAndChangesNothing) {
  if (!edgert_signatures_available()) GTEST_SKIP() << "built without EDGERT_SIGNATURES";
  SlotPtr slot, other;
  make_slot(&slot);
  make_slot(&other);
  const edgert_trust t = trust_from("root0.pub", 0, 0, 1800000000);
  ASSERT_EQ(edgert_slot_set_trust(slot.s, &t), EDGERT_OK);
  const Bytes key(32, 0x6b), key2(32, 0x6c);
  ASSERT_EQ(edgert_slot_set_key(slot.s, key.data(), key.size()), EDGERT_OK);
  edgert_receiver* r = nullptr;
  edgert_receiver* r_other = nullptr;
  ASSERT_EQ(edgert_slot_receiver_create(slot.s, &r), EDGERT_OK);
  ASSERT_EQ(edgert_slot_receiver_create(other.s, &r_other), EDGERT_OK);
  const Bytes v1 = authenticate(edgert_test::read_test_data("signed", "signed_v1.bin"), key);
  const Bytes before = weights_of(slot.s);
  auto feed = [](edgert_receiver* to, const Bytes& b, size_t n) { edgert_receiver_update(to, b.data(), n); };

  Bytes flipped = v1;  // one payload byte differs from what the receiver saw
  flipped[100] ^= 1;
  feed(r, v1, v1.size());
  EXPECT_EQ(edgert_slot_apply_received(slot.s, r, flipped.data(), flipped.size()), EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(edgert_last_error()).find("other bytes"), std::string::npos) << edgert_last_error();
  feed(r, v1, v1.size() - 1);  // one byte short
  EXPECT_EQ(edgert_slot_apply_received(slot.s, r, v1.data(), v1.size()), EDGERT_ERR_INVALID_ARGUMENT);
  feed(r_other, v1, v1.size());  // another slot's receiver
  EXPECT_EQ(edgert_slot_apply_received(slot.s, r_other, v1.data(), v1.size()), EDGERT_ERR_INVALID_ARGUMENT);
  const Bytes junk(40, 0x11);  // not a packet: the packet's own status
  feed(r, junk, junk.size());
  EXPECT_EQ(edgert_slot_apply_received(slot.s, r, junk.data(), junk.size()), EDGERT_ERR_PACKET_TRUNCATED);
  Bytes huge = v1;  // a payload length near 2^64: the receiver stops hashing but keeps counting (found by fuzz_packet)
  huge[71] = 0xbf;
  feed(r, huge, huge.size());
  EXPECT_EQ(edgert_slot_apply_received(slot.s, r, huge.data(), huge.size()), EDGERT_ERR_PACKET_TRUNCATED);
  EXPECT_EQ(weights_of(slot.s), before);
  EXPECT_EQ(edgert_slot_version(slot.s), 0u);

  // After a key change the receiver's MAC (under the old key) is not used: the slot computes it again.
  ASSERT_EQ(edgert_slot_set_key(slot.s, key2.data(), key2.size()), EDGERT_OK);
  feed(r, v1, v1.size());
  EXPECT_EQ(edgert_slot_apply_received(slot.s, r, v1.data(), v1.size()), EDGERT_ERR_PACKET_BAD_MAC);
  const Bytes v1_key2 = authenticate(edgert_test::read_test_data("signed", "signed_v1.bin"), key2);
  feed(r, v1_key2, v1_key2.size());
  EXPECT_EQ(edgert_slot_apply_received(slot.s, r, v1_key2.data(), v1_key2.size()), EDGERT_OK) << edgert_last_error();
  EXPECT_EQ(weights_of(slot.s), edgert_test::read_test_data("packets", "weights_v1.bin"));
  edgert_receiver_free(r);
  edgert_receiver_free(r_other);
}

TEST(Signing, EveryBlockByteAndTruncationIsRejectedWithoutWriting) {
  if (!edgert_signatures_available()) GTEST_SKIP() << "built without EDGERT_SIGNATURES";
  SlotPtr slot;
  make_slot(&slot);
  const edgert_trust t = trust_from("root0.pub", 0, 0, 1800000000);
  ASSERT_EQ(edgert_slot_set_trust(slot.s, &t), EDGERT_OK);
  const Bytes v1 = edgert_test::read_test_data("signed", "signed_v1.bin");
  ASSERT_EQ(edgert_slot_apply(slot.s, v1.data(), v1.size()), EDGERT_OK);
  const Bytes good = edgert_test::read_test_data("signed", "signed_v2.bin");
  const Bytes before = weights_of(slot.s);
  const size_t start = good.size() - 4 - pk::block_bytes(1);
  for (size_t cut = start; cut < good.size(); ++cut) {
    EXPECT_NE(edgert_slot_apply(slot.s, good.data(), cut), EDGERT_OK) << "cut at " << cut;
  }
  for (size_t pos = start; pos + 4 < good.size(); ++pos) {
    Bytes p = good;
    p[pos] ^= 0x01;
    pk::store_u32(p.data() + p.size() - 4, pk::crc32c(p.data(), p.size() - 4));
    EXPECT_NE(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_OK) << "flip at " << pos;
  }
  // A block length outside the valid range is refused by the header checks.
  Bytes p = good;
  pk::store_u32(p.data() + 60, 0xFFFFFFFFu);
  EXPECT_EQ(edgert_slot_apply(slot.s, p.data(), p.size()), EDGERT_ERR_PACKET_MALFORMED);
  EXPECT_EQ(weights_of(slot.s), before);
  EXPECT_EQ(edgert_slot_version(slot.s), 1u);
  ASSERT_EQ(edgert_slot_apply(slot.s, good.data(), good.size()), EDGERT_OK);
}

TEST(Signing, TrustIsOptionalAndRemovable) {
  SlotPtr slot;
  make_slot(&slot);
  edgert_trust got{};
  EXPECT_EQ(edgert_slot_get_trust(slot.s, &got), EDGERT_ERR_NOT_FOUND);
  // Without trust a well-formed block is checked for structure only.
  const Bytes v1 = edgert_test::read_test_data("signed", "signed_v1.bin");
  ASSERT_EQ(edgert_slot_apply(slot.s, v1.data(), v1.size()), EDGERT_OK);
  const edgert_trust t = trust_from("root0.pub", 0, 0, 1800000000);
  if (!edgert_signatures_available()) {
    EXPECT_EQ(edgert_slot_set_trust(slot.s, &t), EDGERT_ERR_BACKEND_UNAVAILABLE);
    return;
  }
  ASSERT_EQ(edgert_slot_set_trust(slot.s, &t), EDGERT_OK);
  const Bytes unsigned_v2 = edgert_test::read_test_data("signed", "unsigned_v2.bin");
  EXPECT_EQ(edgert_slot_apply(slot.s, unsigned_v2.data(), unsigned_v2.size()), EDGERT_ERR_PACKET_UNSIGNED);
  ASSERT_EQ(edgert_slot_set_trust(slot.s, nullptr), EDGERT_OK);
  EXPECT_EQ(edgert_slot_apply(slot.s, unsigned_v2.data(), unsigned_v2.size()), EDGERT_OK);
}

}  // namespace
