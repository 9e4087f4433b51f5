/* Times verify+decode+apply of an update-packet chain on this CPU, the way a device applies them:
 *   time_apply MANIFEST SNAPSHOT PACKET... [--key KEYFILE]
 * The snapshot is applied untimed; each following packet (base = previous target) is timed once
 * with a monotonic clock. Prints one line per packet and a final
 *   "applied N packets: median U us, min U us, max U us"
 * line that bench/bench_packet_device.py parses. Exits non-zero if any packet is rejected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgert/edgert.h"
#include "read_file.h"

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s MANIFEST SNAPSHOT PACKET... [--key KEYFILE]\n", argv[0]);
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
  double* samples = calloc((size_t)argc, sizeof(double));
  int timed = 0;
  for (int i = 2; i < argc; ++i) {
    if (!strcmp(argv[i], "--key") && i + 1 < argc) {
      uint8_t* key = read_file(argv[++i], &len);
      if (!key || edgert_slot_set_key(slot, key, len) != EDGERT_OK) {
        fprintf(stderr, "bad key: %s\n", edgert_last_error());
        return 1;
      }
      free(key);
      continue;
    }
    uint8_t* packet = read_file(argv[i], &len);
    if (!packet) {
      fprintf(stderr, "cannot read %s\n", argv[i]);
      return 1;
    }
    double t0 = now_us();
    edgert_status st = edgert_slot_apply(slot, packet, len);
    double dt = now_us() - t0;
    free(packet);
    if (st != EDGERT_OK) {
      fprintf(stderr, "%s rejected (%s): %s\n", argv[i], edgert_status_name(st), edgert_last_error());
      return 1;
    }
    if (i == 2) continue; /* the snapshot fills the slot; it is not what a steady stream costs */
    printf("%s: %zu bytes, %.1f us\n", argv[i], len, dt);
    samples[timed++] = dt;
  }
  if (timed == 0) {
    fprintf(stderr, "no packet after the snapshot was timed\n");
    return 1;
  }
  qsort(samples, (size_t)timed, sizeof(double), cmp_double);
  printf("applied %d packets: median %.1f us, min %.1f us, max %.1f us, version %llu\n", timed,
         samples[timed / 2], samples[0], samples[timed - 1], (unsigned long long)edgert_slot_version(slot));
  free(samples);
  edgert_slot_free(slot);
  return 0;
}
