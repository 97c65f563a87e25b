#!/bin/sh
# Builds liblzma for wasm32 from an xz source tree and writes it as
# src/fs/squashfs/comp/liblzma.wasm.ts (see wasm/README.md).
#   sh wasm/build-xz.sh XZ_SOURCE_DIR
set -eu
src=${1:?usage: build-xz.sh XZ_SOURCE_DIR}
. "$(dirname "$0")/common.sh"
l=$src/src/liblzma
files="
  $l/check/check.c $l/check/crc32_fast.c $l/check/crc64_fast.c
  $l/common/block_buffer_encoder.c $l/common/block_decoder.c $l/common/block_encoder.c
  $l/common/block_header_decoder.c $l/common/block_header_encoder.c $l/common/block_util.c
  $l/common/common.c $l/common/easy_preset.c $l/common/filter_common.c $l/common/filter_decoder.c
  $l/common/filter_encoder.c $l/common/filter_flags_decoder.c $l/common/filter_flags_encoder.c
  $l/common/microlzma_decoder.c $l/common/microlzma_encoder.c
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
wasm_link "$tmp/liblzma.wasm" -DHAVE_CONFIG_H $inc $files
v() { sed -n "s/^#define LZMA_VERSION_$1 *\([0-9]*\).*/\1/p" "$l/api/lzma/version.h"; }
wasm_embed "$tmp/liblzma.wasm" LIBLZMA_WASM "xz $(v MAJOR).$(v MINOR).$(v PATCH) (liblzma" liblzma.wasm.ts
