// Internal: CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the CPU's
// CRC32C instruction when present (SSE4.2, ARMv8 CRC), else slicing-by-8 tables.
// crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgert::packet {

// Continues a CRC: pass the previous return value (0 to start).
uint32_t crc32c_update(uint32_t crc, const void* data, size_t len);
// Always the table implementation (tests compare it with the hardware path).
uint32_t crc32c_update_portable(uint32_t crc, const void* data, size_t len);
inline uint32_t crc32c(const void* data, size_t len) { return crc32c_update(0, data, len); }

}  // namespace edgert::packet
