// Helpers shared by the slot tests (test_packet.cpp, test_signing.cpp).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "edgert/edgert.h"

namespace edgert_test {

// Frees the slot at scope exit.
struct SlotPtr {
  edgert_slot* s = nullptr;
  ~SlotPtr() { edgert_slot_free(s); }
};

// A copy of the slot's active weight buffer (under a pin).
inline std::vector<uint8_t> weights_of(edgert_slot* s) {
  const void* w = nullptr;
  uint64_t v = 0;
  EXPECT_EQ(edgert_slot_acquire(s, &w, &v), EDGERT_OK);
  const auto* p = static_cast<const uint8_t*>(w);
  std::vector<uint8_t> out(p, p + edgert_slot_weights_size(s));
  edgert_slot_release(s, w);
  return out;
}

}  // namespace edgert_test
