// Release signatures in the slot: the golden signed packets of tests/data/signed (the same files and
// expected statuses as tests/test_signing.py), and corruption of the network-facing signature block.
#include <gtest/gtest.h>

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

TEST(Signing, GoldenCasesGetTheirStatusAndRejectionsChangeNothing) {
  if (!edgert_signatures_available()) GTEST_SKIP() << "built without EDGERT_SIGNATURES";
  SlotPtr slot;
  make_slot(&slot);
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
      const Bytes packet = edgert_test::read_test_data("signed", a);
      const Bytes before = weights_of(slot.s);
      const uint64_t version = edgert_slot_version(slot.s);
      const edgert_status st = edgert_slot_apply(slot.s, packet.data(), packet.size());
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
