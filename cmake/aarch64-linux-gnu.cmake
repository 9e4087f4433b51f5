# Cross-build for aarch64 (Jetson-class CPUs) with Debian's g++-aarch64-linux-gnu.
# Tests run through qemu-user (cmake/run-aarch64); binfmt is usually not mounted, so the emulator is explicit.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR ${CMAKE_CURRENT_LIST_DIR}/run-aarch64)
set(EDGERT_CUDA OFF CACHE STRING "" FORCE)

# OpenSSL 3 for arm64 from Debian multiarch (libssl-dev:arm64, installed by .ci/setup): release signatures in
# libedgert (EDGERT_SIGNATURES) and TLS in the edge node (EDGERT_TLS). The sysroot above holds no OpenSSL, and
# its files lie outside it, so FindOpenSSL is handed them here, by exact path: the arm64 libraries only, never
# a search that could meet the host's x86-64 ones. Linked shared, as natively (docs/design/building.md). The
# headers need no flag: Debian's cross compiler searches /usr/include/aarch64-linux-gnu (openssl/configuration.h
# for arm64) and /usr/include after its own sysroot, and CMake leaves those implicit directories off the command
# line. A value given with -D wins; one an earlier configure left NOTFOUND (before the package) is replaced.
set(_edgert_arm64 /usr/lib/aarch64-linux-gnu)
if(EXISTS ${_edgert_arm64}/libcrypto.so AND EXISTS ${_edgert_arm64}/libssl.so
    AND EXISTS /usr/include/aarch64-linux-gnu/openssl/configuration.h AND EXISTS /usr/include/openssl/opensslv.h)
  if(NOT OPENSSL_INCLUDE_DIR)
    set(OPENSSL_INCLUDE_DIR /usr/include CACHE PATH "OpenSSL headers (arm64: Debian multiarch)" FORCE)
  endif()
  if(NOT OPENSSL_CRYPTO_LIBRARY)
    set(OPENSSL_CRYPTO_LIBRARY ${_edgert_arm64}/libcrypto.so CACHE FILEPATH "arm64 libcrypto (Debian multiarch)" FORCE)
  endif()
  if(NOT OPENSSL_SSL_LIBRARY)
    set(OPENSSL_SSL_LIBRARY ${_edgert_arm64}/libssl.so CACHE FILEPATH "arm64 libssl (Debian multiarch)" FORCE)
  endif()
endif()
unset(_edgert_arm64)
