#!/bin/sh
# Builds native/prebuilt/linux-x64-gnu.node: native/codecs.c with libzstd, liblzma (through
# wasm/xz/shim.c and wasm/xz/config.h) and libdeflate (compressor and decompressor), from the same source trees and
# versions as the wasm builds, statically linked; the result needs only glibc >= 2.14.
#   sh native/build.sh ZSTD_SOURCE_DIR XZ_SOURCE_DIR LIBDEFLATE_SOURCE_DIR
# Needs gcc and Node's headers (node_api.h): /usr/include/node, or set NODE_INCLUDE.
set -eu
usage="usage: build.sh ZSTD_SOURCE_DIR XZ_SOURCE_DIR LIBDEFLATE_SOURCE_DIR"
zstd=${1:?$usage}
xz=${2:?$usage}
deflate=${3:?$usage}
here=$(cd "$(dirname "$0")" && pwd)
wasm=$(cd "$here/../wasm" && pwd)
inc=${NODE_INCLUDE:-/usr/include/node}
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "build.sh: builds the linux-x64-gnu binary, on Linux x86_64 only" >&2; exit 2; }
out=$here/prebuilt/linux-x64-gnu.node
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc=${CC:-gcc}
common="-O3 -fPIC -fvisibility=hidden -DNDEBUG -ffile-prefix-map=$zstd=zstd -ffile-prefix-map=$xz=xz -ffile-prefix-map=$deflate=libdeflate -ffile-prefix-map=$here=native -ffile-prefix-map=$wasm=wasm"

# Each library is compiled on its own (their internal headers share names), then linked together.
z=$zstd/lib
# shellcheck disable=SC2046
(cd "$tmp" && mkdir zstd && cd zstd && $cc $common -DZSTD_LEGACY_SUPPORT=0 -DZSTD_NO_TRACE -DZSTD_TRACE=0 -I"$z" -I"$z/common" -c \
  $(ls "$z"/common/*.c "$z"/compress/*.c "$z"/decompress/*.c) "$z/decompress/huf_decompress_amd64.S")

l=$xz/src/liblzma
# The file list of wasm/build-xz.sh, with its shim.
xzfiles=$(sed -n '/^files="/,/"$/p' "$wasm/build-xz.sh" | sed 's/^files="//; s/"$//' | sed "s|\$l|$l|g; s|\$here|$wasm|g")
# shellcheck disable=SC2086
(cd "$tmp" && mkdir xz && cd xz && $cc $common -Wno-attributes -DHAVE_CONFIG_H -I"$wasm/xz" -I"$l/api" -I"$l/common" -I"$l/check" -I"$l/lz" \
  -I"$l/rangecoder" -I"$l/lzma" -I"$l/simple" -I"$l/delta" -I"$xz/src/common" -c $xzfiles)

d=$deflate/lib
(cd "$tmp" && mkdir deflate && cd deflate && $cc $common -I"$deflate" -c "$d/deflate_decompress.c" "$d/zlib_decompress.c" "$d/deflate_compress.c" "$d/zlib_compress.c" "$d/adler32.c" "$d/utils.c" "$d/x86/cpu_features.c")

$cc $common -I"$inc" -I"$z" -I"$z/common" -I"$l/api" -I"$deflate" -c "$here/codecs.c" -o "$tmp/codecs.o"
# Export only Node-API's entry points: the libraries' own symbols stay local, so they can neither
# clash with nor bind to another copy in the process (Node 22+ links its own zstd).
printf '{ global: napi_register_module_v1; node_api_module_get_api_version_v1; local: *; };\n' > "$tmp/exports.map"
$cc -shared -static-libgcc -Wl,--version-script="$tmp/exports.map" -Wl,--build-id=none -Wl,-O1 -s -o "$out" "$tmp/codecs.o" "$tmp"/zstd/*.o "$tmp"/xz/*.o "$tmp"/deflate/*.o

v() { sed -n "s/^#define $1 *\([0-9]*\).*/\1/p" "$2"; }
echo "$out: zstd $(v ZSTD_VERSION_MAJOR "$z/zstd.h").$(v ZSTD_VERSION_MINOR "$z/zstd.h").$(v ZSTD_VERSION_RELEASE "$z/zstd.h"),\
 xz $(v LZMA_VERSION_MAJOR "$l/api/lzma/version.h").$(v LZMA_VERSION_MINOR "$l/api/lzma/version.h").$(v LZMA_VERSION_PATCH "$l/api/lzma/version.h"),\
 libdeflate $(sed -n 's/^#define LIBDEFLATE_VERSION_STRING[^"]*"\([^"]*\)".*/\1/p' "$deflate/libdeflate.h"), gcc $($cc -dumpfullversion 2>/dev/null || $cc -dumpversion)"
echo "sha256 $(sha256sum "$out" | cut -d' ' -f1), $(stat -c %s "$out") bytes"
echo "glibc symbol versions: $(objdump -T "$out" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tr '\n' ' ')"
