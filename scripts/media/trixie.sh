#!/bin/bash
# Builds the Debian 13 "trixie" live medium booted by test/boot/dracut-erofs.boot.test.ts: a
# debootstrap'd trixie root with its kernel and dracut 106 (dmsquash-live), an initramfs made by that
# dracut, and the root packed as EROFS with Fedora 43's options as squashfs.img. See
# scripts/media/README.md.
#
#   scripts/media/trixie.sh            build into .cache/media-trixie/ unless its stamp is current
#   scripts/media/trixie.sh --force    rebuild it
#
# Environment: LIVESTICK_TRIXIE_MEDIA_DIR overrides the output directory (default
# <repo>/.cache/media-trixie); LIVESTICK_TRIXIE_DIR the erofs-utils chroot (default <repo>/.cache/trixie,
# made by scripts/trixie/build.sh, which must run first: its mkfs.erofs 1.8.6 packs the image).
# Needs root on a Debian host whose apt sources name a Debian mirror (trixie is fetched from it).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${LIVESTICK_TRIXIE_MEDIA_DIR:-$repo/.cache/media-trixie}
tools=${LIVESTICK_TRIXIE_DIR:-$repo/.cache/trixie}
force=0
[[ ${1:-} == --force ]] && force=1
suite=trixie

log() { echo "media/trixie.sh [${SECONDS}s]: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot)"

# attr: getfattr/setfattr for the manifest and the change job; hello: the .deb the change job installs
# (downloaded, not installed). No systemd: dracut-core needs only udev, so the initramfs runs dracut's
# shell init (faster under TCG).
include=attr
extra_deb=hello
pkgs=(linux-image-amd64 dracut dracut-live)
drivers="virtio_blk virtio_pci virtio_scsi sd_mod loop erofs overlay ext4 vfat fat nls_ascii nls_cp437 nls_iso8859_1 nls_utf8 crc32c_generic"
omit="plymouth mdraid lvm nfs iscsi fcoe multipath btrfs crypt dmraid resume systemd network"
# Fedora 43's live image options (lorax / kiwi: LZMA level 6, 1 MiB physical clusters, fragments).
erofs_opts=(-zlzma,level=6 -C1048576 -Efragments)
recipe=1
job_hash=$(sha256sum "$here/livestick-job" | cut -d' ' -f1)

[[ -x $tools/usr/bin/mkfs.erofs ]] || die "no mkfs.erofs in $tools: run scripts/trixie/build.sh first"
erofs_version=$(chroot "$tools" mkfs.erofs --version 2>&1 | head -n1)
stamp="recipe=$recipe suite=$suite include=$include extra=$extra_deb pkgs=${pkgs[*]} drivers=$drivers omit=$omit erofs=${erofs_opts[*]} ($erofs_version) job=$job_hash"
if [[ $force == 0 && -f $out/squashfs.img && $(cat "$out/stamp" 2>/dev/null) == "$stamp" ]]; then
  log "up to date: $out"
  exit 0
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2

# The host's Debian mirror (deb822 or one-line sources), as scripts/trixie/build.sh reads it.
mirror=$(
  { grep -hs '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{ print $2 }'
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }'
  } | grep -v -e security -e updates | grep '/debian/*$' | head -n1 || true
)
[[ -n $mirror ]] || die "no Debian mirror in the host's apt sources"

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

mounted=()
chroot_mount() {
  local r=$1
  mount -t proc proc "$r/proc" && mounted+=("$r/proc")
  mount -t sysfs sysfs "$r/sys" && mounted+=("$r/sys")
  mount --bind /dev "$r/dev" && mounted+=("$r/dev")
  mount -t devpts devpts "$r/dev/pts" -o gid=5,mode=620 && mounted+=("$r/dev/pts")
}
chroot_umount() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  mounted=()
}
trap chroot_umount EXIT
in_chroot() { chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C DEBIAN_FRONTEND=noninteractive "${@:2}"; }

w="$out/work"
r="$w/root"
rm -rf "$w" "$out/new"
mkdir -p "$w"
log "debootstrap --variant=minbase --include=$include $suite ($mirror)"
debootstrap --variant=minbase --include="$include" "$suite" "$r" "$mirror" >"$w/debootstrap.log" 2>&1 ||
  { tail -n 30 "$w/debootstrap.log" >&2; die "debootstrap failed (log: $w/debootstrap.log)"; }
printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
chmod 755 "$r/usr/sbin/policy-rc.d"
echo livestick >"$r/etc/hostname"
chroot_mount "$r"
in_chroot "$r" apt-get update -qq >&2
mkdir -p "$r/opt/livestick"
in_chroot "$r" sh -c "cd /opt/livestick && apt-get download -qq -o APT::Sandbox::User=root $extra_deb" >&2
ls "$r"/opt/livestick/*.deb >/dev/null || die "apt-get download $extra_deb gave no .deb"
log "apt-get install ${pkgs[*]}"
# INITRD=No: the kernel's postinst skips its own initramfs; dracut makes the one used below.
in_chroot "$r" env INITRD=No apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$w/apt.log" 2>&1 ||
  { tail -n 30 "$w/apt.log" >&2; die "apt-get install failed"; }
install -m 755 "$here/livestick-job" "$r/livestick-job"
kver=$(ls "$r/lib/modules" | sort -V | tail -n1)
log "dracut $(in_chroot "$r" dpkg-query -W -f='${Version}' dracut-core): initramfs for $kver"
in_chroot "$r" dracut --no-hostonly --no-hostonly-cmdline --nomdadmconf --nolvmconf --no-early-microcode \
  --add dmsquash-live --omit "$omit" --drivers "$drivers" \
  --kver "$kver" --force /boot/livestick-initrd.img >"$w/dracut.log" 2>&1 ||
  { tail -n 30 "$w/dracut.log" >&2; die "dracut failed"; }
mv "$r/boot/livestick-initrd.img" "$w/initrd.img"
cp "$r/boot/vmlinuz-$kver" "$w/vmlinuz"
chroot_umount

# What the tests do not need (kernel and initramfs live outside the image).
rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
  "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/var/log/*.log \
  "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/tmp/* "$r"/var/tmp/*
rm -rf "$r"/lib/modules "$r"/usr/lib/modules "$r"/boot/*
rm -f "$r"/vmlinuz "$r"/vmlinuz.old "$r"/initrd.img "$r"/initrd.img.old
mkdir -p "$r"/proc "$r"/sys "$r"/dev "$r"/run "$r"/tmp
chmod 1777 "$r"/tmp
[[ -e $r/etc/os-release ]] || die "no /etc/os-release in the root"

# Pack with the erofs-utils chroot's mkfs.erofs: the root bind-mounted into its /tmp.
tag="livestick-media-$$"
mkdir -p "$tools/tmp/$tag-root"
mount --bind "$r" "$tools/tmp/$tag-root" && mounted+=("$tools/tmp/$tag-root")
log "mkfs.erofs ${erofs_opts[*]} ($(du -sm "$r" | cut -f1) MiB tree; $erofs_version)"
t0=$SECONDS
chroot "$tools" mkfs.erofs --quiet "${erofs_opts[@]}" "/tmp/$tag.img" "/tmp/$tag-root" >&2 ||
  { rm -f "$tools/tmp/$tag.img"; die "mkfs.erofs failed"; }
chroot_umount
rmdir "$tools/tmp/$tag-root"
log "mkfs.erofs took $((SECONDS - t0)) s"

mkdir -p "$out/new"
mv "$tools/tmp/$tag.img" "$out/new/squashfs.img"
mv "$w/vmlinuz" "$w/initrd.img" "$out/new/"
echo "$kver" >"$out/new/kernel-version"
du -sm "$r" | cut -f1 >"$out/new/root-mib"
rm -rf "$w"
for f in squashfs.img vmlinuz initrd.img kernel-version root-mib; do mv -f "$out/new/$f" "$out/$f"; done
rmdir "$out/new"
printf '%s\n' "$stamp" >"$out/stamp"
log "done in ${SECONDS} s: $out ($(du -m "$out/squashfs.img" | cut -f1) MiB EROFS squashfs.img, $(du -m "$out/initrd.img" | cut -f1) MiB initrd, kernel $kver)"
