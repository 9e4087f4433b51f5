#include "packet/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define EDGERT_CRC_X86 1
#elif defined(__aarch64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_acle.h>
#include <sys/auxv.h>
#define EDGERT_CRC_ARM 1
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

#include "edgert/edgert.h"
#include "packet/bytes.hpp"

namespace edgert::packet {
namespace {

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i) {
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
  }
  return t;
}

constexpr Tables kTables = make_tables();

uint32_t crc32c_software(uint32_t crc, const void* data, size_t len) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  while (len >= 8) {
    const uint32_t lo = load_u32(p) ^ c;
    const uint32_t hi = load_u32(p + 4);
    c = kTables[7][lo & 0xff] ^ kTables[6][(lo >> 8) & 0xff] ^ kTables[5][(lo >> 16) & 0xff] ^ kTables[4][lo >> 24] ^
        kTables[3][hi & 0xff] ^ kTables[2][(hi >> 8) & 0xff] ^ kTables[1][(hi >> 16) & 0xff] ^ kTables[0][hi >> 24];
    p += 8;
    len -= 8;
  }
  while (len--) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xffu];
  return ~c;
}

// The CRC32C instructions (SSE4.2 on x86-64, the CRC extension on ARMv8) are
// several times faster than tables; they are used only when the CPU reports them,
// so the library still runs on CPUs without them.
#if defined(EDGERT_CRC_X86)
__attribute__((target("sse4.2"))) uint32_t crc32c_hardware(uint32_t crc, const void* data, size_t len) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t c = ~crc;
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (len--) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}
bool hardware_available() { return __builtin_cpu_supports("sse4.2"); }
#elif defined(EDGERT_CRC_ARM)
__attribute__((target("+crc"))) uint32_t crc32c_hardware(uint32_t crc, const void* data, size_t len) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __crc32cd(c, word);
  }
  while (len--) c = __crc32cb(c, *p++);
  return ~c;
}
bool hardware_available() { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
#endif

}  // namespace

uint32_t crc32c_update(uint32_t crc, const void* data, size_t len) {
#if defined(EDGERT_CRC_X86) || defined(EDGERT_CRC_ARM)
  static const bool use_hardware = hardware_available();
  if (use_hardware) return crc32c_hardware(crc, data, len);
#endif
  return crc32c_software(crc, data, len);
}

uint32_t crc32c_update_portable(uint32_t crc, const void* data, size_t len) { return crc32c_software(crc, data, len); }

}  // namespace edgert::packet

extern "C" uint32_t edgert_crc32c(uint32_t crc, const void* data, size_t len) {
  if (data == nullptr) return crc;
  return edgert::packet::crc32c_update(crc, data, len);
}
