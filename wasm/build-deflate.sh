#!/bin/sh
# Builds libdeflate's compressor for wasm32 from a libdeflate source tree and writes it as
# src/fs/squashfs/comp/libdeflate.wasm.ts (see wasm/README.md).
#   sh wasm/build-deflate.sh LIBDEFLATE_SOURCE_DIR
set -eu
src=${1:?usage: build-deflate.sh LIBDEFLATE_SOURCE_DIR}
. "$(dirname "$0")/common.sh"
l=$src/lib
# shellcheck disable=SC2086
wasm_link "$tmp/libdeflate.wasm" -I"$src" "$l/deflate_compress.c" "$l/zlib_compress.c" "$l/adler32.c" "$l/utils.c" "$here/deflate/shim.c"
version=$(sed -n 's/^#define LIBDEFLATE_VERSION_STRING[^"]*"\([^"]*\)".*/\1/p' "$src/libdeflate.h")
wasm_embed "$tmp/libdeflate.wasm" LIBDEFLATE_WASM "libdeflate $version (compressor" libdeflate.wasm.ts
