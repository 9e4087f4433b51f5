#include <cstdio>

#include "core/error.hpp"
#include "edgert/edgert.h"

namespace edgert::detail {
namespace {
thread_local char g_last_error[512] = "";
}

edgert_status fail(edgert_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(g_last_error, sizeof(g_last_error), format, args);
  va_end(args);
  return status;
}

void clear_error() { g_last_error[0] = '\0'; }

const char* last_error() { return g_last_error; }

}  // namespace edgert::detail

extern "C" const char* edgert_last_error(void) { return edgert::detail::last_error(); }

extern "C" const char* edgert_status_name(edgert_status status) {
  switch (status) {
#define EDGERT_CASE(name) \
  case name:              \
    return #name;
    EDGERT_CASE(EDGERT_OK)
    EDGERT_CASE(EDGERT_ERR_INVALID_ARGUMENT)
    EDGERT_CASE(EDGERT_ERR_SHAPE)
    EDGERT_CASE(EDGERT_ERR_DTYPE)
    EDGERT_CASE(EDGERT_ERR_INDEX_OUT_OF_RANGE)
    EDGERT_CASE(EDGERT_ERR_INDEX_UNSORTED)
    EDGERT_CASE(EDGERT_ERR_BUFFER_TOO_SMALL)
    EDGERT_CASE(EDGERT_ERR_PACKET_TRUNCATED)
    EDGERT_CASE(EDGERT_ERR_PACKET_BAD_MAGIC)
    EDGERT_CASE(EDGERT_ERR_PACKET_UNSUPPORTED_VERSION)
    EDGERT_CASE(EDGERT_ERR_PACKET_BAD_CRC)
    EDGERT_CASE(EDGERT_ERR_PACKET_BAD_MAC)
    EDGERT_CASE(EDGERT_ERR_PACKET_WRONG_MODEL)
    EDGERT_CASE(EDGERT_ERR_PACKET_VERSION_MISMATCH)
    EDGERT_CASE(EDGERT_ERR_PACKET_STALE)
    EDGERT_CASE(EDGERT_ERR_PACKET_MALFORMED)
    EDGERT_CASE(EDGERT_ERR_PACKET_BAD_TENSOR)
    EDGERT_CASE(EDGERT_ERR_PACKET_MAC_REQUIRED)
    EDGERT_CASE(EDGERT_ERR_PACKET_UNSIGNED)
    EDGERT_CASE(EDGERT_ERR_PACKET_BAD_SIGNATURE)
    EDGERT_CASE(EDGERT_ERR_PACKET_UNKNOWN_KEY)
    EDGERT_CASE(EDGERT_ERR_PACKET_EXPIRED)
    EDGERT_CASE(EDGERT_ERR_PACKET_BAD_ROTATION)
    EDGERT_CASE(EDGERT_ERR_OUT_OF_MEMORY)
    EDGERT_CASE(EDGERT_ERR_IO)
    EDGERT_CASE(EDGERT_ERR_NOT_FOUND)
    EDGERT_CASE(EDGERT_ERR_CORRUPT_FILE)
    EDGERT_CASE(EDGERT_ERR_BACKEND_UNAVAILABLE)
    EDGERT_CASE(EDGERT_ERR_CUDA)
    EDGERT_CASE(EDGERT_ERR_INTERNAL)
#undef EDGERT_CASE
    case EDGERT_STATUS_MAX_ENUM: break;
  }
  return "EDGERT_ERR_UNKNOWN";
}
