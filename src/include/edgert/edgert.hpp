// edgert.hpp — thin RAII wrappers over the C API (edgert.h).
// Errors become edgert::Error exceptions carrying the status and message.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "edgert/edgert.h"

namespace edgert {

class Error : public std::runtime_error {
 public:
  Error(edgert_status status, const std::string& message)
      : std::runtime_error(std::string(edgert_status_name(status)) + ": " + message), status_(status) {}
  edgert_status status() const noexcept { return status_; }

 private:
  edgert_status status_;
};

// Throws edgert::Error if status is not EDGERT_OK.
inline void check(edgert_status status) {
  if (status != EDGERT_OK) throw Error(status, edgert_last_error());
}

struct MMNetDeleter {
  void operator()(edgert_mmnet* p) const noexcept { edgert_mmnet_free(p); }
};
using MMNetPtr = std::unique_ptr<edgert_mmnet, MMNetDeleter>;

// Creates an MMNet detector or throws.
inline MMNetPtr make_mmnet(const edgert_mmnet_params& params) {
  edgert_mmnet* raw = nullptr;
  check(edgert_mmnet_create(&params, &raw));
  return MMNetPtr(raw);
}

}  // namespace edgert
