// Test helpers shared by the C++ suites: the golden files written by
// tests/data/packets/make_golden.py (the Python encoder), the signed ones of tests/data/signed, and slot
// handling.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "edgert/edgert.h"

namespace edgert_test {

using Bytes = std::vector<uint8_t>;

// tests/data/<dir>/<name>, e.g. ("signed", "cases.txt").
inline Bytes read_test_data(const std::string& dir, const std::string& name) {
  std::ifstream f(std::string(EDGERT_TEST_DATA_DIR) + "/" + dir + "/" + name, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing golden file " << dir << "/" << name;
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline Bytes read_golden(const std::string& name) { return read_test_data("packets", name); }

struct SlotPtr {
  edgert_slot* s = nullptr;
  ~SlotPtr() { edgert_slot_free(s); }
};

inline Bytes weights_of(edgert_slot* s) {
  const void* w = nullptr;
  uint64_t v = 0;
  EXPECT_EQ(edgert_slot_acquire(s, &w, &v), EDGERT_OK);
  const auto* p = static_cast<const uint8_t*>(w);
  Bytes out(p, p + edgert_slot_weights_size(s));
  edgert_slot_release(s, w);
  return out;
}

// The golden chain: packet v - 1 takes the model from version v - 1 to v; weights_v<v>.bin holds the result.
inline const char* const kChain[] = {"full_snapshot.bin", "sparse_fp16.bin", "dense_fp32.bin",    "int8.bin",
                                     "authenticated.bin", "v2_sparse_fp16.bin", "v2_int8.bin",    "v3_sparse_fp16.bin",
                                     "v3_int8.bin",       "int4b.bin",          "int8b.bin",      "v2_int4b.bin",
                                     "v2_int8b.bin",      "v3_blocks.bin",      "v3_fp16_delta.bin"};
constexpr int kChainLength = 15;  // formats: v6, v7, v12, v13: 2; v8, v9, v14, v15: 3; v10..v14 block-scaled; keyed from v5

}  // namespace edgert_test
