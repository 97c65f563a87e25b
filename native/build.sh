#!/bin/sh
# Builds native/prebuilt/linux-x64-gnu.node: native/codecs.c with libzstd from a zstd source tree
# (the same version as wasm/build-zstd.sh), statically linked; it needs only glibc >= 2.14.
#   sh native/build.sh ZSTD_SOURCE_DIR
# Needs (Debian): gcc, and Node's headers (node_api.h), from the nodejs package or NODE_INCLUDE.
set -eu
src=${1:?usage: build.sh ZSTD_SOURCE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
inc=${NODE_INCLUDE:-/usr/include/node}
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "build.sh: builds the linux-x64-gnu binary, on Linux x86_64 only" >&2; exit 2; }
l=$src/lib
out=$here/prebuilt/linux-x64-gnu.node
# shellcheck disable=SC2046
${CC:-gcc} -O3 -fPIC -shared -fvisibility=hidden -DNDEBUG -DZSTD_LEGACY_SUPPORT=0 -DZSTD_NO_TRACE -DZSTD_TRACE=0 \
  -ffile-prefix-map="$src"=zstd -ffile-prefix-map="$here"=native -I"$inc" -I"$l" -I"$l/common" \
  -static-libgcc -Wl,--build-id=none -Wl,-O1 -s -o "$out" \
  "$here/codecs.c" $(ls "$l"/common/*.c "$l"/compress/*.c "$l"/decompress/*.c) "$l/decompress/huf_decompress_amd64.S"
v() { sed -n "s/^#define ZSTD_VERSION_$1 *\([0-9]*\).*/\1/p" "$l/zstd.h"; }
echo "$out: zstd $(v MAJOR).$(v MINOR).$(v RELEASE), $(${CC:-gcc} -dumpfullversion 2>/dev/null || ${CC:-gcc} -dumpversion), sha256 $(sha256sum "$out" | cut -d' ' -f1)"
echo "glibc symbol versions: $(objdump -T "$out" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tr '\n' ' ')"
