// libFuzzer target: arbitrary bytes as a manifest. Slot creation must either
// fail cleanly or produce a slot whose tensor table is self-consistent.
#include <cstdint>
#include <cstdlib>

#include "edgert/edgert.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  edgert_slot* slot = nullptr;
  if (edgert_slot_create(data, size, &slot) != EDGERT_OK) {
    if (slot != nullptr) std::abort();
    return 0;
  }
  uint64_t end = 0;
  for (uint32_t i = 0; i < edgert_slot_tensor_count(slot); ++i) {
    edgert_tensor_info info;
    if (edgert_slot_tensor_info(slot, i, &info) != EDGERT_OK) std::abort();
    if (info.byte_offset < end || info.byte_offset % 64 != 0) std::abort();
    end = info.byte_offset + info.byte_size;
  }
  if (end > edgert_slot_weights_size(slot)) std::abort();
  edgert_slot_free(slot);
  return 0;
}
