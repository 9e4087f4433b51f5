/* The smallest host program: query the runtime and patch a weight buffer in
 * place with a sparse fp32 update, the way a device applies a model delta. */
#include <stdio.h>

#include "edgert/edgert.h"

int main(void) {
  edgert_backend_info cpu, gpu;
  if (edgert_backend_query(EDGERT_BACKEND_CPU, &cpu) != EDGERT_OK) return 1;
  if (edgert_backend_query(EDGERT_BACKEND_CUDA, &gpu) != EDGERT_OK) return 1;
  printf("edgert %s  cpu: %s  cuda: %s\n", edgert_version_string(), cpu.detail, gpu.detail);

  float weights[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  const uint32_t indices[3] = {1, 4, 7}; /* strictly increasing */
  const float deltas[3] = {0.5f, -1.0f, 2.0f};
  edgert_status st = edgert_sparse_patch(weights, EDGERT_F32, 8, indices, EDGERT_U32, deltas, EDGERT_F32, 3,
                                         EDGERT_PATCH_ADD);
  if (st != EDGERT_OK) {
    fprintf(stderr, "patch rejected: %s: %s\n", edgert_status_name(st), edgert_last_error());
    return 1;
  }
  const uint32_t bad[2] = {5, 3}; /* unsorted: rejected, weights untouched */
  st = edgert_sparse_patch(weights, EDGERT_F32, 8, bad, EDGERT_U32, deltas, EDGERT_F32, 2, EDGERT_PATCH_ADD);
  printf("unsorted patch -> %s (%s)\n", edgert_status_name(st), edgert_last_error());
  printf("weights: %g %g %g\n", weights[1], weights[4], weights[7]);
  return (st == EDGERT_ERR_INDEX_UNSORTED && weights[1] == 1.5f && weights[4] == 3.0f && weights[7] == 9.0f) ? 0 : 1;
}
