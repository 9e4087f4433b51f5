// The format 3 rANS encoder (encode_v3.hpp): validate every step, then code backwards.
#include "packet/encode_v3.hpp"

#include <new>
#include <stdexcept>

#include "core/error.hpp"
#include "packet/rans.hpp"

namespace edgert::packet {

using detail::fail;

edgert_status encode_rans_v3(const uint8_t* states, const uint16_t* starts, const uint16_t* freqs, size_t count,
                             std::vector<uint8_t>* out) {
  if (out == nullptr || (count > 0 && (states == nullptr || starts == nullptr || freqs == nullptr))) {
    return fail(EDGERT_ERR_INVALID_ARGUMENT, "rans_encode_v3: null steps or output");
  }
  for (size_t j = 0; j < count; ++j) {
    if (states[j] >= kRansStates || freqs[j] == 0 || freqs[j] > kRansTotal ||
        static_cast<uint32_t>(starts[j]) + freqs[j] > kRansTotal) {
      return fail(EDGERT_ERR_INVALID_ARGUMENT,
                  "rans_encode_v3: step %zu: state %u, start %u, frequency %u (expected state < %u, "
                  "0 < frequency, start + frequency <= %u)",
                  j, states[j], starts[j], freqs[j], kRansStates, kRansTotal);
    }
  }
  try {
    // Words are produced last-read-first; collect them, then lay the stream out forwards.
    std::vector<uint16_t> words;
    words.reserve(count + 16);
    uint32_t x[kRansStates];
    for (uint32_t& s : x) s = kRansLow;
    for (size_t j = count; j-- > 0;) {
      uint32_t& s = x[states[j]];
      const uint32_t f = freqs[j];
      if (s >= (static_cast<uint64_t>(f) << 20)) {  // ((kRansLow >> kRansPrecision) << 16) * f (2^32 for f = 4096)
        words.push_back(static_cast<uint16_t>(s));
        s >>= 16;
      }
      s = ((s / f) << kRansPrecision) + (s % f) + starts[j];
    }
    std::vector<uint8_t> stream(kRansStateBytes + 2 * words.size());
    for (unsigned i = 0; i < kRansStates; ++i) store_u32(stream.data() + 4 * i, x[i]);
    uint8_t* p = stream.data() + kRansStateBytes;
    for (size_t j = words.size(); j-- > 0; p += 2) store_u16(p, words[j]);
    out->swap(stream);
  } catch (const std::bad_alloc&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "rans_encode_v3: out of memory for %zu steps", count);
  } catch (const std::length_error&) {
    return fail(EDGERT_ERR_OUT_OF_MEMORY, "rans_encode_v3: out of memory for %zu steps", count);
  }
  detail::clear_error();
  return EDGERT_OK;
}

}  // namespace edgert::packet
