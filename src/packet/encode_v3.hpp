// Internal: the server-side rANS encoder of packet format 3 (docs/spec/update-packet.md,
// "Format version 3"). The Python encoder (edgert.updates.rans) turns the entries into
// the spec's sequence of coding steps (state, start, frequency) with the packet's tables;
// this runs the steps backwards through the three rANS states. Bit-exact with the pure
// Python reference edgert.updates.rans.encode_steps_reference, which tests compare against.
//
// Self-contained (standard and public headers only): the Python binding includes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgert/edgert.h"

namespace edgert::packet {

// Encodes `count` steps (step j codes the symbol [starts[j], starts[j] + freqs[j]) of 4096
// on state states[j]) and stores the stream in *out, replacing its content: the three
// final states (u32 LE), then the 16-bit words in the order the decoder reads them.
//
// Every step is validated before anything is coded: a state > 2, a frequency of 0 or above
// 4096, or start + frequency > 4096 is EDGERT_ERR_INVALID_ARGUMENT (edgert_last_error() names
// the step); null arrays with count > 0 or a null out likewise. Out of memory:
// EDGERT_ERR_OUT_OF_MEMORY. On any failure *out is unchanged. Allocates the output only.
// Thread-safe (no shared state).
[[nodiscard]] edgert_status encode_rans_v3(const uint8_t* states, const uint16_t* starts, const uint16_t* freqs,
                                           size_t count, std::vector<uint8_t>* out);

}  // namespace edgert::packet
