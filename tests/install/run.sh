#!/usr/bin/env bash
# Installs libedgert into temporary prefixes and builds firmware/examples out of tree against
# it, as a robot project would: with find_package(edgert) (shared and static library) and with
# pkg-config (firmware/examples/Makefile: shared, and fully static), natively and cross-built
# for aarch64 (run under qemu-aarch64). Checks the installed tree too: the public headers only,
# a .so exporting nothing but the C API, no files from third-party builds.
#   bash tests/install/run.sh [HOST_BUILD_DIR [AARCH64_BUILD_DIR]]
# Given build trees (.ci/test passes its own) are reused: installing from them costs seconds.
# Without them, lean trees (no tests, no CUDA) are configured and built under build/install-test/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc)}
HOST_BUILD=${1:-build/install-test/host}
A64_BUILD=${2:-build/install-test/aarch64}
TOOLCHAIN=$ROOT/cmake/aarch64-linux-gnu.cmake
QEMU=("$ROOT/cmake/run-aarch64")  # qemu-aarch64 with the toolchain's runtime (the toolchain file's emulator)
G=$ROOT/tests/data/packets
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgert-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# install_lib BUILD_DIR PREFIX [cmake args for a fresh configure]
install_lib() {
  local dir=$1 prefix=$2; shift 2
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S . -B "$dir" -G Ninja -DEDGERT_TESTS=OFF -DEDGERT_CUDA=OFF "$@" >/dev/null
  fi
  grep -q '^EDGERT_INSTALL:BOOL=ON' "$dir/CMakeCache.txt" || fail "$dir was configured with EDGERT_INSTALL=OFF"
  cmake --build "$dir" -j "$JOBS" >/dev/null
  cmake --install "$dir" --prefix "$prefix" >/dev/null
}

# check_tree PREFIX NM
check_tree() {
  local p=$1 nm=$2 f
  for f in include/edgert/edgert.h include/edgert/edgert.hpp lib/libedgert.a lib/libedgert.so \
      lib/cmake/edgert/edgertConfig.cmake lib/cmake/edgert/edgertConfigVersion.cmake \
      lib/cmake/edgert/edgertTargets.cmake lib/cmake/edgert/edgertStaticTargets.cmake \
      lib/pkgconfig/edgert.pc bin/edgert_edge_node bin/edgert_apply_update; do
    [ -e "$p/$f" ] || fail "$p/$f not installed"
  done
  local extra
  extra=$(cd "$p" && find . -type f -o -type l | sort | grep -v -E \
    '^\./(include/edgert/edgert\.(h|hpp)|lib/libedgert\.(a|so(\.[0-9.]+)?)|lib/cmake/edgert/edgert[A-Za-z-]*\.cmake|lib/pkgconfig/edgert\.pc|bin/edgert_[a-z_]+)$' || true)
  [ -z "$extra" ] || fail "unexpected files installed in $p: $extra"
  local soname
  soname=$(readelf -d "$p/lib/libedgert.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ -e "$p/lib/$soname" ] || fail "soname $soname not installed"
  # the .so exports every EDGERT_API function of edgert.h and nothing else
  diff <(grep -o 'EDGERT_API [^(]*(' src/include/edgert/edgert.h | grep -o 'edgert_[a-z0-9_]*($' | tr -d '(' |
    sort) <("$nm" -D --defined-only "$p/lib/libedgert.so" | awk '{print $3}' | sort) >/dev/null ||
    fail "libedgert.so does not export exactly the EDGERT_API functions of edgert.h"
}

# features PREFIX [RUNNER...]: what the installed libedgert and edge node were built with, e.g.
# "signatures=ON tls=yes" (the node, run without arguments, prints its usage and says when it has no TLS)
features() {
  local p=$1 sig usage tls=yes; shift
  sig=$(sed -n 's/^set(edgert_SIGNATURES \(.*\))$/\1/p' "$p/lib/cmake/edgert/edgertConfig.cmake")
  usage=$("$@" "$p/bin/edgert_edge_node" 2>&1 || true)
  case $usage in *usage:*) ;; *) fail "$p/bin/edgert_edge_node does not start: $usage" ;; esac
  case $usage in *"has no TLS"*) tls=no ;; esac
  echo "signatures=$sig tls=$tls"
}

# run_examples DIR SUFFIX shared|static [RUNNER...]: checks how the programs link libedgert, then runs the
# self-checking example and the golden update chain
run_examples() {
  local dir=$1 suffix=$2 link=$3 exe; shift 3
  for exe in "$dir/embed_example$suffix" "$dir/apply_update$suffix"; do
    if readelf -d "$exe" | grep -q 'NEEDED.*libedgert\.so'; then
      [ "$link" = shared ] || fail "$exe needs libedgert.so, expected libedgert.a linked in"
    else
      [ "$link" = static ] || fail "$exe does not link libedgert.so"
    fi
  done
  "$@" "$dir/embed_example$suffix" >/dev/null || fail "$dir/embed_example$suffix"
  "$@" "$dir/apply_update$suffix" "$G/manifest.bin" "$G/full_snapshot.bin" "$G/sparse_fp16.bin" \
    "$G/dense_fp32.bin" "$G/int8.bin" --key "$G/key.bin" "$G/authenticated.bin" \
    --expect "$G/weights_v5.bin" >/dev/null || fail "$dir/apply_update$suffix"
  echo "  ok  ${dir#"$WORK"/}/{embed_example,apply_update}$suffix ($link libedgert)"
}

echo "-- host: install $HOST_BUILD"
HP=$WORK/prefix-host
install_lib "$HOST_BUILD" "$HP"
check_tree "$HP" nm
"$HP/bin/edgert_embed_example" >/dev/null || fail "installed edgert_embed_example"
cmake -S firmware/examples -B "$WORK/host-cmake" -G Ninja -DCMAKE_PREFIX_PATH="$HP" >/dev/null
cmake --build "$WORK/host-cmake" -j "$JOBS" >/dev/null
run_examples "$WORK/host-cmake" "" shared
run_examples "$WORK/host-cmake" _static static
# a C-only project: edgert::edgert (the .so) is all it can and needs to use
mkdir -p "$WORK/c-only"
cat > "$WORK/c-only/CMakeLists.txt" <<EOC
cmake_minimum_required(VERSION 3.25)
project(c_only LANGUAGES C)
find_package(edgert REQUIRED)
if(TARGET edgert::edgert_static)
  message(FATAL_ERROR "edgert::edgert_static defined without CXX")
endif()
add_executable(embed_example $ROOT/firmware/examples/embed_example.c)
target_link_libraries(embed_example PRIVATE edgert::edgert)
EOC
cmake -S "$WORK/c-only" -B "$WORK/c-only/build" -G Ninja -DCMAKE_PREFIX_PATH="$HP" >/dev/null
cmake --build "$WORK/c-only/build" >/dev/null
"$WORK/c-only/build/embed_example" >/dev/null || fail "C-only project's embed_example"
echo "  ok  C-only CMake project (edgert::edgert)"
make -s -f firmware/examples/Makefile O="$WORK/host-pc" PKG_CONFIG_LIBDIR="$HP/lib/pkgconfig"
run_examples "$WORK/host-pc" "" shared
make -s -f firmware/examples/Makefile O="$WORK/host-pc-static" STATIC=1 PKG_CONFIG_LIBDIR="$HP/lib/pkgconfig"
run_examples "$WORK/host-pc-static" "" static
# the C++ header compiles and links on its own
printf '#include <edgert/edgert.hpp>\nint main() { edgert::check(EDGERT_OK); return 0; }\n' > "$WORK/hpp.cpp"
# shellcheck disable=SC2046
c++ -std=c++17 "$WORK/hpp.cpp" -o "$WORK/hpp" $(PKG_CONFIG_LIBDIR="$HP/lib/pkgconfig" pkg-config --cflags --libs edgert) \
  -Wl,-rpath,"$HP/lib"
"$WORK/hpp" || fail "edgert.hpp program"
echo "  ok  edgert.hpp"

echo "-- aarch64: install $A64_BUILD"
AP=$WORK/prefix-aarch64
install_lib "$A64_BUILD" "$AP" -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN"
check_tree "$AP" aarch64-linux-gnu-nm
file -L "$AP/lib/libedgert.so" | grep -q aarch64 || fail "aarch64 prefix holds a non-aarch64 libedgert.so"
# The cross-build has what the native one has (release signatures, the node's TLS: arm64 OpenSSL from
# libssl-dev:arm64), linked to the arm64 libcrypto.so.3, and its node starts under qemu with it.
host_features=$(features "$HP")
a64_features=$(features "$AP" "${QEMU[@]}")
[ "$a64_features" = "$host_features" ] || fail "aarch64 prefix has $a64_features, the host prefix $host_features"
if [ "$a64_features" != "signatures=OFF tls=no" ]; then
  aarch64-linux-gnu-readelf -d "$AP/lib/libedgert.so" | grep 'NEEDED.*libcrypto\.so\.3' >/dev/null ||
    fail "aarch64 libedgert.so does not link libcrypto.so.3"
fi
echo "  ok  aarch64 prefix: $a64_features, as the host prefix"
cmake -S firmware/examples -B "$WORK/a64-cmake" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" \
  -Dedgert_DIR="$AP/lib/cmake/edgert" >/dev/null
cmake --build "$WORK/a64-cmake" -j "$JOBS" >/dev/null
run_examples "$WORK/a64-cmake" "" shared "${QEMU[@]}"
run_examples "$WORK/a64-cmake" _static static "${QEMU[@]}"
make -s -f firmware/examples/Makefile O="$WORK/a64-pc" CC=aarch64-linux-gnu-gcc PKG_CONFIG_LIBDIR="$AP/lib/pkgconfig"
run_examples "$WORK/a64-pc" "" shared "${QEMU[@]}"
make -s -f firmware/examples/Makefile O="$WORK/a64-pc-static" STATIC=1 CC=aarch64-linux-gnu-gcc \
  PKG_CONFIG_LIBDIR="$AP/lib/pkgconfig"
run_examples "$WORK/a64-pc-static" "" static "${QEMU[@]}"
echo "install test: ok"
