/* Whole-file reading for the example programs (not part of the C API). */
#ifndef EDGERT_FIRMWARE_EXAMPLES_READ_FILE_H
#define EDGERT_FIRMWARE_EXAMPLES_READ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Returns a malloc'd buffer holding the file and its length in *len, or NULL
 * (and *len = 0) when it cannot be opened or read completely. */
static uint8_t* read_file(const char* path, size_t* len) {
  *len = 0;
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t* buf = malloc(n > 0 ? (size_t)n : 1);
  if (buf && n >= 0 && fread(buf, 1, (size_t)n, f) == (size_t)n) {
    *len = (size_t)n;
  } else {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

#endif
