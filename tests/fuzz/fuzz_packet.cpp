// libFuzzer target: arbitrary bytes as an update packet against a slot built
// from the golden manifest (snapshot applied / key set by bits of the last
// byte). Must never crash, leak or write the active weights on rejection.
// With bit 2 of the last byte the harness rebases the packet onto the slot's
// version and recomputes its CRC, so mutations reach the entry and
// entropy-coded stream decoders (formats 2 and 3; the seed corpus has golden packets
// of both) instead of stopping at the CRC check (which covers a signature block, when the
// SIGNED flag announces one). With bit 3 the slot pins the golden root key
// (tests/data/signed), so mutations of signed packets reach the signature-block parser and
// the Ed25519 verification (libedgert built with EDGERT_SIGNATURES). With bit 4 the packet is also
// fed to a receiver in pieces (sizes from the first byte) and applied with edgert_slot_apply_received
// on a twin slot: both paths must give the same status and, when applied, the same weights.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "edgert/edgert.h"

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

struct State {
  std::vector<uint8_t> manifest = read_file(std::string(EDGERT_TEST_DATA_DIR) + "/packets/manifest.bin");
  std::vector<uint8_t> snapshot = read_file(std::string(EDGERT_TEST_DATA_DIR) + "/packets/full_snapshot.bin");
  std::vector<uint8_t> key = read_file(std::string(EDGERT_TEST_DATA_DIR) + "/packets/key.bin");
  std::vector<uint8_t> root = read_file(std::string(EDGERT_TEST_DATA_DIR) + "/signed/root0.pub");
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static State state;
  auto make_slot = [&] {
    edgert_slot* s = nullptr;
    if (edgert_slot_create(state.manifest.data(), state.manifest.size(), &s) != EDGERT_OK) std::abort();
    // Half the inputs meet a slot at version 1 (so v1 -> v2 packets apply).
    if (size > 0 && (data[size - 1] & 1)) {
      if (edgert_slot_apply(s, state.snapshot.data(), state.snapshot.size()) != EDGERT_OK) std::abort();
    }
    if (size > 0 && (data[size - 1] & 2)) {
      if (edgert_slot_set_key(s, state.key.data(), state.key.size()) != EDGERT_OK) std::abort();
    }
    if (size > 0 && (data[size - 1] & 8) && edgert_signatures_available() && state.root.size() == 32) {
      edgert_trust trust{};
      std::memcpy(trust.root_key, state.root.data(), 32);
      trust.fixed_time = 1800000000;  // the golden packets' clock (tests/data/signed/cases.txt)
      if (edgert_slot_set_trust(s, &trust) != EDGERT_OK) std::abort();
    }
    return s;
  };
  edgert_slot* slot = make_slot();
  auto weights = [](edgert_slot* s) {
    const void* w = nullptr;
    if (edgert_slot_acquire(s, &w, nullptr) != EDGERT_OK) std::abort();
    const uint8_t* p = static_cast<const uint8_t*>(w);
    std::vector<uint8_t> out(p, p + edgert_slot_weights_size(s));
    edgert_slot_release(s, w);
    return out;
  };
  auto snapshot = [&] { return weights(slot); };
  const std::vector<uint8_t> before = snapshot();
  const uint64_t version = edgert_slot_version(slot);
  std::vector<uint8_t> packet(data, data + size);
  if (size >= 76 && (data[size - 1] & 4)) {
    uint64_t payload = 0;
    for (int i = 0; i < 8; ++i) payload |= static_cast<uint64_t>(packet[64 + i]) << (8 * i);
    for (int i = 0; i < 8; ++i) packet[40 + i] = static_cast<uint8_t>(version >> (8 * i));
    for (int i = 0; i < 8; ++i) packet[48 + i] = static_cast<uint8_t>((version + 1) >> (8 * i));
    uint64_t block = 0;  // the signature block's length when the SIGNED flag (bit 2) is set
    if (packet[6] & 4) {
      for (int i = 0; i < 4; ++i) block |= static_cast<uint64_t>(packet[60 + i]) << (8 * i);
    }
    if (payload <= size - 76 && block <= size - 76 - payload) {
      const size_t body = 72 + static_cast<size_t>(payload + block);
      const uint32_t crc = edgert_crc32c(0, packet.data(), body);
      for (int i = 0; i < 4; ++i) packet[body + i] = static_cast<uint8_t>(crc >> (8 * i));
    }
  }
  edgert_packet_header header;
  (void)edgert_packet_inspect(packet.data(), packet.size(), &header);
  const edgert_status st = edgert_slot_apply(slot, packet.data(), packet.size());
  if (st != EDGERT_OK) {
    if (snapshot() != before || edgert_slot_version(slot) != version) std::abort();  // rejected but changed
  }
  if (size > 0 && (data[size - 1] & 16)) {
    edgert_slot* twin = make_slot();
    edgert_receiver* receiver = nullptr;
    if (edgert_slot_receiver_create(twin, &receiver) != EDGERT_OK) std::abort();
    const size_t piece = 1 + data[0] % 97;
    for (size_t at = 0; at < packet.size(); at += piece) {
      edgert_receiver_update(receiver, packet.data() + at, packet.size() - at < piece ? packet.size() - at : piece);
    }
    const edgert_status st2 = edgert_slot_apply_received(twin, receiver, packet.data(), packet.size());
    if (st2 != st) std::abort();  // hashing on arrival must not change any outcome
    if (st == EDGERT_OK && weights(twin) != weights(slot)) std::abort();
    edgert_receiver_free(receiver);
    edgert_slot_free(twin);
  }
  edgert_slot_free(slot);
  return 0;
}
