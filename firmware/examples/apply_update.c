/* Applies update packets to a model slot, the way a device does:
 *   apply_update MANIFEST PACKET... [--key KEYFILE] [--expect WEIGHTS]
 * Each packet is verified in full before any weight changes; a rejected
 * packet leaves the active model as it was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgert/edgert.h"
#include "read_file.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MANIFEST PACKET... [--key KEYFILE] [--expect WEIGHTS]\n", argv[0]);
    return 2;
  }
  size_t len = 0;
  uint8_t* manifest = read_file(argv[1], &len);
  edgert_slot* slot = NULL;
  if (!manifest || edgert_slot_create(manifest, len, &slot) != EDGERT_OK) {
    fprintf(stderr, "bad manifest %s: %s\n", argv[1], edgert_last_error());
    return 1;
  }
  free(manifest);
  const char* expect = NULL;
  int failures = 0;
  for (int i = 2; i < argc; ++i) {
    if (!strcmp(argv[i], "--expect") && i + 1 < argc) { expect = argv[++i]; continue; }
    if (!strcmp(argv[i], "--key") && i + 1 < argc) {
      uint8_t* key = read_file(argv[++i], &len);
      if (!key || edgert_slot_set_key(slot, key, len) != EDGERT_OK) failures++;
      free(key);
      continue;
    }
    uint8_t* packet = read_file(argv[i], &len);
    edgert_status st = packet ? edgert_slot_apply(slot, packet, len) : EDGERT_ERR_IO;
    printf("%-40s -> %s, version %llu%s%s\n", argv[i], edgert_status_name(st),
           (unsigned long long)edgert_slot_version(slot), st ? ": " : "", st ? edgert_last_error() : "");
    failures += st != EDGERT_OK;
    free(packet);
  }
  if (expect) { /* compare the active weights with a reference buffer */
    uint8_t* want = read_file(expect, &len);
    const void* weights = NULL;
    uint64_t version = 0;
    if (!want || edgert_slot_acquire(slot, &weights, &version) != EDGERT_OK) return 1;
    int same = len == edgert_slot_weights_size(slot) && memcmp(weights, want, len) == 0;
    edgert_slot_release(slot, weights);
    printf("weights at version %llu %s %s\n", (unsigned long long)version, same ? "match" : "DIFFER from", expect);
    failures += !same;
    free(want);
  }
  edgert_slot_free(slot);
  return failures ? 1 : 0;
}
