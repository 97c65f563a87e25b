#!/bin/sh
# Builds libdeflate's compressor for wasm32 from a libdeflate source tree with clang's wasm32-wasi
# target, and writes it as src/fs/squashfs/comp/libdeflate.wasm.ts (base64).
#   sh wasm/build-deflate.sh LIBDEFLATE_SOURCE_DIR
# Needs (Debian): clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32. The output is committed, so
# installing or running livestick never needs a compiler. Same inputs and toolchain give the same bytes.
set -eu
src=${1:?usage: build-deflate.sh LIBDEFLATE_SOURCE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-clang-14}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
l=$src/lib
files="$l/deflate_compress.c $l/zlib_compress.c $l/adler32.c $l/utils.c $here/deflate/shim.c"
# shellcheck disable=SC2086
$cc --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi -O2 -DNDEBUG \
  -mbulk-memory -mnontrapping-fptoint -msign-ext -ffunction-sections -fdata-sections -I"$src" \
  -nostartfiles -L/usr/lib/wasm32-wasi -Wl,--no-entry -Wl,--gc-sections -Wl,--strip-all \
  -Wl,-z,stack-size=262144 -Wl,--initial-memory=4194304 \
  -fuse-ld=lld -o "$tmp/libdeflate.wasm" $files
version=$(sed -n 's/^#define LIBDEFLATE_VERSION_STRING[^"]*"\([^"]*\)".*/\1/p' "$src/libdeflate.h")
node "$here/embed.mjs" "$tmp/libdeflate.wasm" LIBDEFLATE_WASM "libdeflate $version (compressor, clang $($cc -dumpversion))" \
  > "$here/../src/fs/squashfs/comp/libdeflate.wasm.ts"
