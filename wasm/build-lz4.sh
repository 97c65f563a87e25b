#!/bin/sh
# Builds liblz4 (block format, plus HC) for wasm32 from an lz4 source tree and writes it as
# src/fs/squashfs/comp/liblz4.wasm.ts (see wasm/README.md).
#   sh wasm/build-lz4.sh LZ4_SOURCE_DIR
set -eu
src=${1:?usage: build-lz4.sh LZ4_SOURCE_DIR}
. "$(dirname "$0")/common.sh"
l=$src/lib
wasm_link "$tmp/liblz4.wasm" -I"$l" "$l/lz4.c" "$l/lz4hc.c" "$here/lz4/shim.c"
v() { sed -n "s/^#define LZ4_VERSION_$1 *\([0-9]*\).*/\1/p" "$l/lz4.h"; }
wasm_embed "$tmp/liblz4.wasm" LIBLZ4_WASM "lz4 $(v MAJOR).$(v MINOR).$(v RELEASE) (liblz4" liblz4.wasm.ts
