// Internal: the arithmetic of sparse patching, shared by cpu::sparse_patch
// (which calls it after validating its indices) and the update-packet slot
// (after verify_packet has validated the packet), so that one implementation
// defines weights[idx[i]] (+)= values[i] for the public op and for the device:
// ADD widens to fp32, sums and rounds once (to nearest even) to the weights'
// dtype; SET converts (same dtype: copies the bits). Compiled with
// -ffp-contract=off, like the packet code, so that it rounds exactly as the
// Python encoder's mirror does.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgert/edgert.h"

namespace edgert::detail {

// weights[idx[i]] (+)= values[i] for i < count; idx == nullptr means a dense
// run, weights[i] (+)= values[i]. weights: F32|F16; values: F32|F16 in native
// byte order, aligned for their type. No checks (the caller validated dtypes,
// bounds and strictly increasing indices); runs serially on the calling thread.
void sparse_apply(void* weights, edgert_dtype weights_dtype, const uint32_t* idx, const void* values,
                  edgert_dtype values_dtype, size_t count, edgert_patch_mode mode);

}  // namespace edgert::detail
