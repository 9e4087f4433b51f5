// The format 2 stream encoder (encode_v2.hpp): validate every entry, then code.
#include "packet/encode_v2.hpp"

#include <memory>
#include <new>
#include <stdexcept>

#include "core/error.hpp"
#include "packet/bytes.hpp"
#include "packet/range_coder.hpp"

namespace edgert::packet {

namespace {

using ull = unsigned long long;
using detail::fail;

edgert_status validate(const StreamEntryV2& e, size_t j) {
  if (e.value_bits != 4 && e.value_bits != 8 && e.value_bits != 16) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "range_encode_v2: entry %zu: value bits must be 4, 8 or 16, got %u", j,
                e.value_bits);
  }
  if (e.count > 0 && e.symbols == nullptr) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "range_encode_v2: entry %zu: %llu symbols but no symbol buffer", j,
                static_cast<ull>(e.count));
  }
  if (e.value_bits == 4) {
    for (uint64_t t = 0; t < e.count; ++t) {
      if (e.symbols[t] > 15) {
        return fail(EDGERT_ERR_INVALID_ARGUMENT, "range_encode_v2: entry %zu: 4-bit symbol %llu is %u (> 15)", j,
                    static_cast<ull>(t), e.symbols[t]);
      }
    }
  }
  if (e.sparse && e.count > 0 && e.indices == nullptr) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "range_encode_v2: entry %zu: %llu sparse coordinates but no indices", j,
                static_cast<ull>(e.count));
  }
  if (!e.sparse) {
    if (e.count != e.numel) {
      return fail(EDGERT_ERR_SHAPE,
                  "range_encode_v2: entry %zu: a dense entry codes all %llu elements, got %llu symbols", j,
                  static_cast<ull>(e.numel), static_cast<ull>(e.count));
    }
    return EDGERT_OK;
  }
  int64_t prev = -1;
  for (uint64_t t = 0; t < e.count; ++t) {
    const int64_t i = e.indices[t];
    if (i < 0 || static_cast<uint64_t>(i) >= e.numel) {
      return fail(EDGERT_ERR_INDEX_OUT_OF_RANGE,
                  "range_encode_v2: entry %zu: index %lld at position %llu out of range [0, %llu)", j,
                  static_cast<long long>(i), static_cast<ull>(t), static_cast<ull>(e.numel));
    }
    if (i <= prev) {
      return fail(EDGERT_ERR_INDEX_UNSORTED,
                  "range_encode_v2: entry %zu: indices must be strictly increasing: position %llu holds %lld after "
                  "%lld",
                  j, static_cast<ull>(t), static_cast<long long>(i), static_cast<long long>(prev));
    }
    const uint64_t gap = static_cast<uint64_t>(i) - static_cast<uint64_t>(prev) - 1;  // prev = -1 wraps to i
    if (gap > 0xFFFFFFFFull) {
      return fail(EDGERT_ERR_INDEX_OUT_OF_RANGE,
                  "range_encode_v2: entry %zu: gap %llu before index %lld (position %llu) does not fit 32 bits", j,
                  static_cast<ull>(gap), static_cast<long long>(i), static_cast<ull>(t));
    }
    prev = i;
  }
  return EDGERT_OK;
}

template <unsigned kBits>
uint32_t symbol_at(const uint8_t* p) {
  if constexpr (kBits == 16) {
    return load_u16(p);
  } else {
    return *p;
  }
}

template <unsigned kBits>
void encode_entry(RangeEncoder& rc, const StreamEntryV2& e, uint16_t* probs, GapModel& gaps) {
  constexpr unsigned kBytes = kBits == 16 ? 2 : 1;
  const uint8_t* sym = e.symbols;
  if (!e.sparse) {
    for (uint64_t t = 0; t < e.count; ++t, sym += kBytes) {
      encode_tree<kBits>(rc, probs, symbol_at<kBits>(sym));
    }
    return;
  }
  gaps.reset();
  int64_t prev = -1;
  for (uint64_t t = 0; t < e.count; ++t, sym += kBytes) {
    const int64_t i = e.indices[t];
    gaps.encode_v(rc, static_cast<uint64_t>(i) - static_cast<uint64_t>(prev));  // v = gap + 1
    prev = i;
    encode_tree<kBits>(rc, probs, symbol_at<kBits>(sym));
  }
}

}  // namespace

edgert_status encode_stream_v2(const StreamEntryV2* entries, size_t count, std::vector<uint8_t>* out) {
  if (out == nullptr || (count > 0 && entries == nullptr)) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "range_encode_v2: null entries or output");
  }
  // Raw symbol bytes plus ~1 byte per gap: peaked values code below that, uniform ones ~2% above.
  uint64_t estimate = 16;
  for (size_t j = 0; j < count; ++j) {
    const edgert_status st = validate(entries[j], j);
    if (st != EDGERT_OK) return st;
    estimate += entries[j].count * ((entries[j].value_bits + 7) / 8 + (entries[j].sparse ? 1 : 0));
  }
  try {
    std::vector<uint8_t> stream;
    stream.reserve(static_cast<size_t>(estimate + estimate / 16));
    std::unique_ptr<uint16_t[]> probs(new uint16_t[kTree16Contexts + kTree8Contexts + kTree4Contexts]);
    uint16_t* probs16 = probs.get();
    uint16_t* probs8 = probs16 + kTree16Contexts;
    uint16_t* probs4 = probs8 + kTree8Contexts;
    reset_probs(probs16, kTree16Contexts);
    reset_probs(probs8, kTree8Contexts);
    reset_probs(probs4, kTree4Contexts);
    GapModel gaps;
    RangeEncoder rc(&stream);
    for (size_t j = 0; j < count; ++j) {
      if (entries[j].value_bits == 16) {
        encode_entry<16>(rc, entries[j], probs16, gaps);
      } else if (entries[j].value_bits == 4) {
        encode_entry<4>(rc, entries[j], probs4, gaps);
      } else {
        encode_entry<8>(rc, entries[j], probs8, gaps);
      }
    }
    if (!rc.finish()) return fail(EDGERT_ERR_INTERNAL, "range_encode_v2: the coder's first byte is not 0");
    out->swap(stream);
  } catch (const std::bad_alloc&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "range_encode_v2: out of memory for a stream of ~%llu bytes",
                static_cast<ull>(estimate));
  } catch (const std::length_error&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "range_encode_v2: out of memory for a stream of ~%llu bytes",
                static_cast<ull>(estimate));
  }
  detail::clear_error();
  return EDGERT_OK;
}

}  // namespace edgert::packet
