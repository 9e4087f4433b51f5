#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.hpp"
#include "core/half_convert.hpp"
#include "edgert/edgert.h"
#include "edgert/kernels.hpp"

namespace {

using edgert::detail::float_to_half;
using edgert::detail::half_to_float;

std::vector<uint32_t> sorted_sample(size_t n, size_t k, uint32_t seed) {
  std::vector<uint32_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = static_cast<uint32_t>(i);
  std::mt19937 gen(seed);
  std::shuffle(all.begin(), all.end(), gen);
  all.resize(k);
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

}  // namespace

TEST(HalfConvert, BatchMatchesScalarForEveryHalf) {
  // Every non-NaN half widens identically on the batch (hardware) path.
  std::vector<uint16_t> halves;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue;  // NaN payloads may be quieted by hardware
    halves.push_back(static_cast<uint16_t>(h));
  }
  std::vector<float> wide(halves.size());
  edgert::detail::half_to_float_n(halves.data(), wide.data(), halves.size());
  for (size_t i = 0; i < halves.size(); ++i) {
    const float expect = half_to_float(halves[i]);
    ASSERT_EQ(std::memcmp(&wide[i], &expect, sizeof(float)), 0) << "half bits " << halves[i];
  }
  // Narrowing: random floats over many magnitudes plus ties, subnormals and overflow.
  std::vector<float> floats = random_floats(50000, 11);
  std::mt19937 gen(5);
  for (float& f : floats) f = std::ldexp(f, static_cast<int>(gen() % 60) - 40);
  const float tiny = std::ldexp(1.0f, -24);
  for (float f : {1.0f + std::ldexp(1.0f, -11), 65504.0f, 65519.99f, 65520.0f, -65520.0f, tiny / 2, tiny * 0.75f,
                  tiny * 1.5f, 0.0f, -0.0f, INFINITY, -INFINITY}) {
    floats.push_back(f);
  }
  std::vector<uint16_t> narrow(floats.size());
  edgert::detail::float_to_half_n(floats.data(), narrow.data(), floats.size());
  for (size_t i = 0; i < floats.size(); ++i) ASSERT_EQ(narrow[i], float_to_half(floats[i])) << floats[i];
}

TEST(HalfConvert, NaNsConvertLikeTheScalarCodeToo) {
  // Every NaN half (signalling ones included) widens to the same bits on every path, at every
  // position of an 8-lane block and in the scalar tail.
  std::vector<uint16_t> halves;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) halves.push_back(static_cast<uint16_t>(h));
  }
  halves.push_back(0x3c00);  // one non-NaN so that a block mixes both
  for (size_t offset : {0u, 3u}) {
    std::vector<float> wide(halves.size() - offset);
    edgert::detail::half_to_float_n(halves.data() + offset, wide.data(), wide.size());
    for (size_t i = 0; i < wide.size(); ++i) {
      const float expect = half_to_float(halves[offset + i]);
      ASSERT_EQ(std::memcmp(&wide[i], &expect, sizeof(float)), 0) << "half bits " << std::hex << halves[offset + i];
    }
  }
  // NaN floats (quiet and signalling, payloads in high and low bits) narrow identically.
  std::vector<float> floats;
  for (uint32_t sign : {0u, 0x80000000u}) {
    for (uint32_t frac : {1u, 0x1fffu, 0x2000u, 0x3fffffu, 0x155555u, 0x400000u, 0x400001u, 0x7fffffu, 0x6aaaaau}) {
      const uint32_t bits = sign | 0x7f800000u | frac;
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      floats.push_back(f);
    }
  }
  std::vector<uint16_t> narrow(floats.size());
  edgert::detail::float_to_half_n(floats.data(), narrow.data(), floats.size());
  for (size_t i = 0; i < floats.size(); ++i) ASSERT_EQ(narrow[i], float_to_half(floats[i])) << i;
}

TEST(SparsePatch, AddAndSetFp32) {
  std::vector<float> w(10, 1.0f);
  const int32_t idx[] = {0, 3, 9};
  const float val[] = {0.5f, -2.0f, 4.0f};
  ASSERT_EQ(edgert_sparse_patch(w.data(), EDGERT_F32, w.size(), idx, EDGERT_I32, val, EDGERT_F32, 3, EDGERT_PATCH_ADD),
            EDGERT_OK);
  EXPECT_EQ(w, (std::vector<float>{1.5f, 1, 1, -1.0f, 1, 1, 1, 1, 1, 5.0f}));
  ASSERT_EQ(edgert_sparse_patch(w.data(), EDGERT_F32, w.size(), idx, EDGERT_I32, val, EDGERT_F32, 3, EDGERT_PATCH_SET),
            EDGERT_OK);
  EXPECT_EQ(w, (std::vector<float>{0.5f, 1, 1, -2.0f, 1, 1, 1, 1, 1, 4.0f}));
  // count 0 with null buffers is a no-op.
  EXPECT_EQ(edgert_sparse_patch(nullptr, EDGERT_F32, 0, nullptr, EDGERT_U32, nullptr, EDGERT_F16, 0, EDGERT_PATCH_ADD),
            EDGERT_OK);
}

TEST(SparsePatch, HalfCombinationsRoundOnceLikeScalarReference) {
  const size_t n = 40001, k = 3001;  // odd sizes: conversion tails and several parallel chunks
  const std::vector<uint32_t> idx = sorted_sample(n, k, 1);
  const std::vector<float> base = random_floats(n, 2);
  std::vector<float> vals = random_floats(k, 3);
  for (size_t i = 0; i < k; ++i) vals[i] = std::ldexp(vals[i], static_cast<int>(i % 30) - 15);
  std::vector<uint16_t> vals16(k), base16(n);
  for (size_t i = 0; i < k; ++i) vals16[i] = float_to_half(vals[i]);
  for (size_t i = 0; i < n; ++i) base16[i] = float_to_half(base[i]);

  for (edgert_patch_mode mode : {EDGERT_PATCH_ADD, EDGERT_PATCH_SET}) {
    for (edgert_dtype vdt : {EDGERT_F32, EDGERT_F16}) {
      const void* v = vdt == EDGERT_F32 ? static_cast<const void*>(vals.data()) : vals16.data();
      auto value = [&](size_t i) { return vdt == EDGERT_F32 ? vals[i] : half_to_float(vals16[i]); };
      // fp16 weights
      std::vector<uint16_t> w16 = base16, expect16 = base16;
      for (size_t i = 0; i < k; ++i) {
        const float old = half_to_float(expect16[idx[i]]);
        expect16[idx[i]] = float_to_half(mode == EDGERT_PATCH_ADD ? old + value(i) : value(i));
      }
      ASSERT_EQ(edgert_sparse_patch(w16.data(), EDGERT_F16, n, idx.data(), EDGERT_U32, v, vdt, k, mode), EDGERT_OK);
      EXPECT_EQ(w16, expect16) << "mode " << mode << " values dtype " << vdt;
      // fp32 weights
      std::vector<float> w32 = base, expect32 = base;
      for (size_t i = 0; i < k; ++i) expect32[idx[i]] = mode == EDGERT_PATCH_ADD ? base[idx[i]] + value(i) : value(i);
      ASSERT_EQ(edgert_sparse_patch(w32.data(), EDGERT_F32, n, idx.data(), EDGERT_U32, v, vdt, k, mode), EDGERT_OK);
      EXPECT_EQ(w32, expect32) << "mode " << mode << " values dtype " << vdt;
    }
  }
}

TEST(SparsePatch, RejectionLeavesBufferIdentical) {
  const size_t n = 100000, k = 20000;
  std::vector<uint32_t> good = sorted_sample(n, k, 4);
  const std::vector<float> vals = random_floats(k, 5);
  const std::vector<float> base = random_floats(n, 6);
  struct Bad {
    size_t pos;
    int64_t value;
    edgert_status status;
  };
  // Defects late in the array (after the first parallel chunks) and at the ends.
  for (const Bad& bad : {Bad{k - 1, static_cast<int64_t>(n), EDGERT_ERR_INDEX_OUT_OF_RANGE},
                         Bad{15000, -1, EDGERT_ERR_INDEX_OUT_OF_RANGE}, Bad{0, -7, EDGERT_ERR_INDEX_OUT_OF_RANGE},
                         Bad{17000, -2, EDGERT_ERR_INDEX_UNSORTED}, Bad{12345, -3, EDGERT_ERR_INDEX_UNSORTED}}) {
    std::vector<int32_t> idx(good.begin(), good.end());
    std::string expect_prefix;
    if (bad.status == EDGERT_ERR_INDEX_OUT_OF_RANGE) {
      idx[bad.pos] = static_cast<int32_t>(bad.value);
      expect_prefix = "sparse_patch: index " + std::to_string(bad.value) + " at position " + std::to_string(bad.pos) +
                      " is out of range [0, " + std::to_string(n) + ")";
    } else if (bad.value == -2) {  // duplicate
      idx[bad.pos] = idx[bad.pos - 1];
      expect_prefix = "sparse_patch: indices must be strictly increasing: position " + std::to_string(bad.pos) +
                      " holds " + std::to_string(idx[bad.pos]) + " after " + std::to_string(idx[bad.pos - 1]);
    } else {  // swap two neighbours
      std::swap(idx[bad.pos], idx[bad.pos + 1]);
      expect_prefix = "sparse_patch: indices must be strictly increasing: position " + std::to_string(bad.pos + 1) +
                      " holds " + std::to_string(idx[bad.pos + 1]) + " after " + std::to_string(idx[bad.pos]);
    }
    for (edgert_patch_mode mode : {EDGERT_PATCH_ADD, EDGERT_PATCH_SET}) {
      std::vector<float> w = base;
      EXPECT_EQ(edgert_sparse_patch(w.data(), EDGERT_F32, n, idx.data(), EDGERT_I32, vals.data(), EDGERT_F32, k, mode),
                bad.status);
      EXPECT_EQ(std::string(edgert_last_error()), expect_prefix);
      EXPECT_EQ(std::memcmp(w.data(), base.data(), n * sizeof(float)), 0);
    }
  }
  // The same index bits read as uint32: -1 is 4294967295, out of range.
  std::vector<uint32_t> u = good;
  u[5] = 0xffffffffu;
  std::vector<float> w = base;
  EXPECT_EQ(edgert_sparse_patch(w.data(), EDGERT_F32, n, u.data(), EDGERT_U32, vals.data(), EDGERT_F32, k,
                                EDGERT_PATCH_ADD),
            EDGERT_ERR_INDEX_OUT_OF_RANGE);
  EXPECT_NE(std::string(edgert_last_error()).find("index 4294967295 at position 5"), std::string::npos);
  EXPECT_EQ(std::memcmp(w.data(), base.data(), n * sizeof(float)), 0);
}

TEST(SparsePatch, BadArgumentsAreRejected) {
  float w[4] = {0, 0, 0, 0};
  const uint32_t idx[1] = {1};
  const float v[1] = {1};
  EXPECT_EQ(edgert_sparse_patch(w, EDGERT_I32, 4, idx, EDGERT_U32, v, EDGERT_F32, 1, EDGERT_PATCH_ADD),
            EDGERT_ERR_DTYPE);
  EXPECT_EQ(edgert_sparse_patch(w, EDGERT_F32, 4, idx, EDGERT_F32, v, EDGERT_F32, 1, EDGERT_PATCH_ADD),
            EDGERT_ERR_DTYPE);
  EXPECT_EQ(edgert_sparse_patch(w, EDGERT_F32, 4, idx, EDGERT_U32, v, EDGERT_C64, 1, EDGERT_PATCH_ADD),
            EDGERT_ERR_DTYPE);
  EXPECT_EQ(edgert_sparse_patch(w, EDGERT_F32, 4, idx, EDGERT_U32, v, EDGERT_F32, 1, static_cast<edgert_patch_mode>(2)),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(edgert_last_error()).find("mode must be add (0) or set (1), got 2"), std::string::npos);
  EXPECT_EQ(edgert_sparse_patch(w, EDGERT_F32, 4, nullptr, EDGERT_U32, v, EDGERT_F32, 1, EDGERT_PATCH_ADD),
            EDGERT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(edgert_sparse_patch(w, EDGERT_F32, 0, idx, EDGERT_U32, v, EDGERT_F32, 1, EDGERT_PATCH_ADD),
            EDGERT_ERR_INDEX_OUT_OF_RANGE);
  for (float x : w) EXPECT_EQ(x, 0.0f);
}

TEST(SparseGather, InverseOfSetAndConverts) {
  const size_t n = 20011, k = 2003;
  const std::vector<uint32_t> idx = sorted_sample(n, k, 8);
  std::vector<float> w = random_floats(n, 9);
  std::vector<float> before(k), after(k);
  std::vector<uint16_t> half_out(k);
  ASSERT_EQ(edgert_sparse_gather(w.data(), EDGERT_F32, n, idx.data(), EDGERT_U32, k, before.data(), EDGERT_F32),
            EDGERT_OK);
  for (size_t i = 0; i < k; ++i) ASSERT_EQ(before[i], w[idx[i]]);
  ASSERT_EQ(edgert_sparse_gather(w.data(), EDGERT_F32, n, idx.data(), EDGERT_U32, k, half_out.data(), EDGERT_F16),
            EDGERT_OK);
  for (size_t i = 0; i < k; ++i) ASSERT_EQ(half_out[i], float_to_half(w[idx[i]]));

  // Patch, then undo with the gathered values: the buffer is restored exactly.
  const std::vector<float> original = w;
  const std::vector<float> delta = random_floats(k, 10);
  ASSERT_EQ(edgert_sparse_patch(w.data(), EDGERT_F32, n, idx.data(), EDGERT_U32, delta.data(), EDGERT_F32, k,
                                EDGERT_PATCH_ADD),
            EDGERT_OK);
  ASSERT_EQ(edgert_sparse_gather(w.data(), EDGERT_F32, n, idx.data(), EDGERT_U32, k, after.data(), EDGERT_F32),
            EDGERT_OK);
  for (size_t i = 0; i < k; ++i) ASSERT_EQ(after[i], original[idx[i]] + delta[i]);
  ASSERT_EQ(edgert_sparse_patch(w.data(), EDGERT_F32, n, idx.data(), EDGERT_U32, before.data(), EDGERT_F32, k,
                                EDGERT_PATCH_SET),
            EDGERT_OK);
  EXPECT_EQ(w, original);

  // fp16 weights gathered to fp32 widen exactly.
  std::vector<uint16_t> w16(n);
  for (size_t i = 0; i < n; ++i) w16[i] = float_to_half(original[i]);
  ASSERT_EQ(edgert_sparse_gather(w16.data(), EDGERT_F16, n, idx.data(), EDGERT_U32, k, after.data(), EDGERT_F32),
            EDGERT_OK);
  for (size_t i = 0; i < k; ++i) ASSERT_EQ(after[i], half_to_float(w16[idx[i]]));

  // A bad index leaves `out` untouched.
  std::vector<int32_t> bad(idx.begin(), idx.end());
  bad[k / 2] = bad[k / 2 - 1];
  std::vector<float> out(k, -1.0f);
  EXPECT_EQ(edgert_sparse_gather(w.data(), EDGERT_F32, n, bad.data(), EDGERT_I32, k, out.data(), EDGERT_F32),
            EDGERT_ERR_INDEX_UNSORTED);
  EXPECT_NE(std::string(edgert_last_error()).find("sparse_gather: indices must be strictly increasing"),
            std::string::npos);
  for (float x : out) EXPECT_EQ(x, -1.0f);
}
