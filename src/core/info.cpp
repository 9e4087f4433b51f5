#include <cstdio>
#include <cstring>

#include "edgert/edgert.h"

#ifndef EDGERT_VERSION_STRING
#error "EDGERT_VERSION_STRING must be defined by the build"
#endif
#ifndef EDGERT_BUILD_TYPE
#define EDGERT_BUILD_TYPE "unknown"
#endif
#ifndef EDGERT_SANITIZE_FLAGS
#define EDGERT_SANITIZE_FLAGS ""
#endif

extern "C" const char* edgert_version_string(void) { return EDGERT_VERSION_STRING; }

extern "C" void edgert_version(int* major, int* minor, int* patch) {
  int parts[3] = {0, 0, 0};
  std::sscanf(EDGERT_VERSION_STRING, "%d.%d.%d", &parts[0], &parts[1], &parts[2]);
  if (major) *major = parts[0];
  if (minor) *minor = parts[1];
  if (patch) *patch = parts[2];
}

extern "C" const char* edgert_build_flags(void) {
  static const char flags[] =
      "build=" EDGERT_BUILD_TYPE
#if defined(EDGERT_WITH_OPENMP)
      " openmp=1"
#else
      " openmp=0"
#endif
#if defined(EDGERT_WITH_SIGNATURES)
      " signatures=1"
#else
      " signatures=0"
#endif
#if defined(__aarch64__)
      " arch=aarch64"
#elif defined(__x86_64__)
      " arch=x86_64"
#else
      " arch=other"
#endif
      " sanitize=" EDGERT_SANITIZE_FLAGS;
  return flags;
}
