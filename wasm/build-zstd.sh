#!/bin/sh
# Builds libzstd for wasm32 from a zstd source tree and writes it as
# src/fs/squashfs/comp/libzstd.wasm.ts (see wasm/README.md).
#   sh wasm/build-zstd.sh ZSTD_SOURCE_DIR
set -eu
src=${1:?usage: build-zstd.sh ZSTD_SOURCE_DIR}
. "$(dirname "$0")/common.sh"
l=$src/lib
files="$(ls "$l"/common/*.c "$l"/compress/*.c "$l"/decompress/*.c) $here/zstd/shim.c"
# shellcheck disable=SC2086
wasm_link "$tmp/libzstd.wasm" -DZSTD_DISABLE_ASM=1 -DZSTD_LEGACY_SUPPORT=0 -DZSTD_NO_TRACE -DZSTD_TRACE=0 -I"$l" -I"$l/common" $files
v() { sed -n "s/^#define ZSTD_VERSION_$1 *\([0-9]*\).*/\1/p" "$l/zstd.h"; }
wasm_embed "$tmp/libzstd.wasm" LIBZSTD_WASM "zstd $(v MAJOR).$(v MINOR).$(v RELEASE) (libzstd" libzstd.wasm.ts
