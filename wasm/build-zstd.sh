#!/bin/sh
# Builds libzstd for wasm32 from a zstd source tree with clang's wasm32-wasi target, and writes it
# as src/fs/squashfs/comp/libzstd.wasm.ts (base64, so tsx, tsc output and bundles all carry it).
#   sh wasm/build-zstd.sh ZSTD_SOURCE_DIR
# Needs (Debian): clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32. The output is committed, so
# installing or running livestick never needs a compiler. Same inputs and toolchain give the same bytes.
set -eu
src=${1:?usage: build-zstd.sh ZSTD_SOURCE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-clang-14}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
l=$src/lib
files="$(ls "$l"/common/*.c "$l"/compress/*.c "$l"/decompress/*.c) $here/zstd/shim.c"
# shellcheck disable=SC2086
$cc --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi -O2 -DNDEBUG \
  -DZSTD_DISABLE_ASM=1 -DZSTD_LEGACY_SUPPORT=0 -DZSTD_NO_TRACE -DZSTD_TRACE=0 \
  -mbulk-memory -mnontrapping-fptoint -msign-ext -ffunction-sections -fdata-sections -I"$l" -I"$l/common" \
  -nostartfiles -L/usr/lib/wasm32-wasi -Wl,--no-entry -Wl,--gc-sections -Wl,--strip-all \
  -Wl,-z,stack-size=262144 -Wl,--initial-memory=4194304 \
  -fuse-ld=lld -o "$tmp/libzstd.wasm" $files
v() { sed -n "s/^#define ZSTD_VERSION_$1 *\([0-9]*\).*/\1/p" "$l/zstd.h"; }
node "$here/embed.mjs" "$tmp/libzstd.wasm" LIBZSTD_WASM "zstd $(v MAJOR).$(v MINOR).$(v RELEASE) (libzstd, clang $($cc -dumpversion))" \
  > "$here/../src/fs/squashfs/comp/libzstd.wasm.ts"
