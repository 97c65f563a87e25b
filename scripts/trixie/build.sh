#!/bin/bash
# Builds a Debian 13 "trixie" chroot with the tools newer than Debian 12 ships, used as test oracles:
# erofs-utils 1.8.6 (mkfs.erofs with -Efragments, dedupe, deflate, zstd and MicroLZMA; fsck.erofs
# --extract; dump.erofs). The host's apt sources are not changed: debootstrap fetches trixie from the
# mirror the host uses. See scripts/trixie/README.md.
#
#   scripts/trixie/build.sh            build .cache/trixie unless its stamp is current
#   scripts/trixie/build.sh --force    rebuild it
#
# Environment: LIVESTICK_TRIXIE_DIR overrides the chroot directory (default <repo>/.cache/trixie).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${LIVESTICK_TRIXIE_DIR:-$repo/.cache/trixie}
packages=erofs-utils
recipe=1
log() { echo "trixie/build.sh [${SECONDS}s]: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (debootstrap)"
stamp="recipe=$recipe packages=$packages"
if [[ ${1:-} != --force && -f $out/.livestick-stamp && $(cat "$out/.livestick-stamp") == "$stamp" ]]; then
  log "up to date: $out"
  exit 0
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2

# The mirror of the host's Debian sources (deb822 or one-line form); trixie is served from it too.
mirror=$(
  { grep -hs '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{ print $2 }'
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }'
  } | grep -v -e security -e updates | grep '/debian/*$' | head -n1 || true
)
[[ -n $mirror ]] || die "no Debian mirror in the host's apt sources"

rm -rf "$out.tmp"
log "debootstrap --variant=minbase --include=$packages trixie ($mirror)"
debootstrap --variant=minbase --include="$packages" trixie "$out.tmp" "$mirror" >&2
rm -rf "$out.tmp"/var/cache/apt/archives/*.deb
mkdir -p "$out.tmp/tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$stamp" > "$out/.livestick-stamp"
log "done: $out ($(chroot "$out" mkfs.erofs --version 2>&1 | head -n1))"
