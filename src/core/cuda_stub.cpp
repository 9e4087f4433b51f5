// The CUDA entry of the backend registry in a build without CUDA kernels:
// nothing registered (the core then reports CUDA as not compiled in).
#include "core/registry.hpp"

namespace edgert::detail {

const BackendTable* cuda_backend() { return nullptr; }

}  // namespace edgert::detail
