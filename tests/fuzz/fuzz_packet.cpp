// libFuzzer target: arbitrary bytes as an update packet against a slot built
// from the golden manifest (key set on odd first bytes). Must never crash,
// leak or write the active weights on rejection.
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
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static State state;
  edgert_slot* slot = nullptr;
  if (edgert_slot_create(state.manifest.data(), state.manifest.size(), &slot) != EDGERT_OK) std::abort();
  // Half the inputs meet a slot at version 1 (so v1 -> v2 packets apply).
  if (size > 0 && (data[size - 1] & 1)) {
    if (edgert_slot_apply(slot, state.snapshot.data(), state.snapshot.size()) != EDGERT_OK) std::abort();
  }
  if (size > 0 && (data[size - 1] & 2)) {
    if (edgert_slot_set_key(slot, state.key.data(), state.key.size()) != EDGERT_OK) std::abort();
  }
  auto snapshot = [&] {
    const void* w = nullptr;
    if (edgert_slot_acquire(slot, &w, nullptr) != EDGERT_OK) std::abort();
    const uint8_t* p = static_cast<const uint8_t*>(w);
    std::vector<uint8_t> out(p, p + edgert_slot_weights_size(slot));
    edgert_slot_release(slot, w);
    return out;
  };
  const std::vector<uint8_t> before = snapshot();
  const uint64_t version = edgert_slot_version(slot);
  edgert_packet_header header;
  (void)edgert_packet_inspect(data, size, &header);
  const edgert_status st = edgert_slot_apply(slot, data, size);
  if (st != EDGERT_OK) {
    if (snapshot() != before || edgert_slot_version(slot) != version) std::abort();  // rejected but changed
  }
  edgert_slot_free(slot);
  return 0;
}
