#!/bin/sh
# Builds liblzma for wasm32 from an xz source tree with clang's wasm32-wasi target, and writes it
# as src/fs/squashfs/comp/liblzma.wasm.ts (base64, so tsx, tsc output and bundles all carry it).
#   sh wasm/build-xz.sh XZ_SOURCE_DIR
# Needs (Debian): clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32. The output is committed, so
# installing or running livestick never needs a compiler; rebuild only to change the xz version or
# the shim. Same inputs and toolchain give the same bytes.
set -eu
src=${1:?usage: build-xz.sh XZ_SOURCE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-clang-14}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
l=$src/src/liblzma
files="
  $l/check/check.c $l/check/crc32_fast.c $l/check/crc64_fast.c
  $l/common/block_buffer_encoder.c $l/common/block_decoder.c $l/common/block_encoder.c
  $l/common/block_header_decoder.c $l/common/block_header_encoder.c $l/common/block_util.c
  $l/common/common.c $l/common/easy_preset.c $l/common/filter_common.c $l/common/filter_decoder.c
  $l/common/filter_encoder.c $l/common/filter_flags_decoder.c $l/common/filter_flags_encoder.c
  $l/common/index.c $l/common/index_decoder.c $l/common/index_encoder.c $l/common/index_hash.c
  $l/common/stream_buffer_decoder.c $l/common/stream_buffer_encoder.c $l/common/stream_decoder.c
  $l/common/stream_flags_common.c $l/common/stream_flags_decoder.c $l/common/stream_flags_encoder.c
  $l/common/vli_decoder.c $l/common/vli_encoder.c $l/common/vli_size.c
  $l/lz/lz_decoder.c $l/lz/lz_encoder.c $l/lz/lz_encoder_mf.c
  $l/lzma/lzma2_decoder.c $l/lzma/lzma2_encoder.c $l/lzma/lzma_decoder.c $l/lzma/lzma_encoder.c
  $l/lzma/lzma_encoder_optimum_fast.c $l/lzma/lzma_encoder_optimum_normal.c $l/lzma/lzma_encoder_presets.c
  $l/lzma/fastpos_table.c $l/rangecoder/price_table.c
  $l/simple/simple_coder.c $l/simple/simple_decoder.c $l/simple/simple_encoder.c
  $l/simple/x86.c $l/simple/powerpc.c $l/simple/ia64.c $l/simple/arm.c $l/simple/armthumb.c $l/simple/sparc.c
  $here/xz/shim.c"
inc="-I$here/xz -I$l/api -I$l/common -I$l/check -I$l/lz -I$l/rangecoder -I$l/lzma -I$l/simple -I$l/delta -I$src/src/common"
# shellcheck disable=SC2086
$cc --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi -O2 -DHAVE_CONFIG_H -DNDEBUG \
  -mbulk-memory -mnontrapping-fptoint -msign-ext -ffunction-sections -fdata-sections $inc \
  -nostartfiles -L/usr/lib/wasm32-wasi -Wl,--no-entry -Wl,--gc-sections -Wl,--strip-all \
  -Wl,-z,stack-size=262144 -Wl,--initial-memory=4194304 \
  -fuse-ld=lld -o "$tmp/liblzma.wasm" $files
v() { sed -n "s/^#define LZMA_VERSION_$1 *\([0-9]*\).*/\1/p" "$l/api/lzma/version.h"; }
node "$here/embed.mjs" "$tmp/liblzma.wasm" LIBLZMA_WASM "xz $(v MAJOR).$(v MINOR).$(v PATCH) (liblzma, clang $($cc -dumpversion))" \
  > "$here/../src/fs/squashfs/comp/liblzma.wasm.ts"
