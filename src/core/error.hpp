// Internal: setting the thread-local error message and returning a status.
#pragma once

#include <cstdarg>

#include "edgert/edgert.h"

namespace edgert::detail {

// Formats the message (printf-style) into the thread-local error buffer and
// returns `status`, so call sites read `return fail(EDGERT_ERR_SHAPE, "...")`.
edgert_status fail(edgert_status status, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// Clears the thread-local message (called on success by API entry points).
void clear_error();

}  // namespace edgert::detail
