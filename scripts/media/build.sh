#!/bin/bash
# Builds the real live media booted by test/boot/: one debootstrap'd Debian 12 root (kept as a tarball)
# and two variants made from it — dracut 059 dmsquash-live (flat squashfs.img) and Debian live-boot
# (filesystem.squashfs) — each with the distro's own kernel and initramfs. See scripts/media/README.md.
#
#   scripts/media/build.sh            build into .cache/media/ what its stamps say is missing or stale
#   scripts/media/build.sh --force    rebuild everything
#
# Environment: LIVESTICK_MEDIA_DIR overrides the output directory (default <repo>/.cache/media).
# Needs root on Debian 12 with a reachable apt mirror (read from the host's apt sources at run time).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${LIVESTICK_MEDIA_DIR:-$repo/.cache/media}
force=0
[[ ${1:-} == --force ]] && force=1
suite=bookworm

log() { echo "media/build.sh [${SECONDS}s]: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot)"
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

# Packages of each stage. attr: getfattr/setfattr for the manifest and the change job; hello: the small
# .deb the change job installs with dpkg -i (downloaded into the base, not installed).
base_include=attr
extra_deb=hello
dracut_pkgs=(linux-image-amd64 dracut dracut-live)
liveboot_pkgs=(linux-image-amd64 live-boot live-boot-initramfs-tools)
dracut_drivers="virtio_blk virtio_pci virtio_scsi sd_mod sr_mod isofs squashfs loop ext4 overlay dm_snapshot vfat fat nls_ascii nls_cp437 nls_iso8859_1 nls_utf8 crc32c_generic"
dracut_omit="plymouth mdraid lvm nfs iscsi fcoe multipath btrfs crypt dmraid resume systemd network"
squash_opts=(-comp zstd -Xcompression-level 15 -noappend -no-progress -quiet)

# Each stage's stamp names its own inputs; bump a recipe number when that stage's steps change.
base_recipe=2 dracut_recipe=2 liveboot_recipe=1
job_hash=$(sha256sum "$here/livestick-job" | cut -d' ' -f1)

# --- host tools -------------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
if ((${#need[@]} > 0)); then
  log "apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; }
fi

# --- the mirror, from the host's apt sources ---------------------------------------------------------
mirror_of_host() {
  local f
  # deb822 files: the first URIs of a stanza whose Suites name the release (not -security).
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v s="$suite" '
      /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u = ""; ok = 0; next }
      tolower($1) == "uris:" { u = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
      END { if (u != "" && ok) print u }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v s="$suite" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i + 1) == s) print $i; break } }' "$f"
  done
}
mirror=$(mirror_of_host | head -n1)
[[ -n $mirror ]] || die "no $suite mirror found in /etc/apt/sources.list.d/*.sources or sources.list"

# --- chroot helpers ------------------------------------------------------------------------------------
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

strip_root() { # what a live root for these tests does not need (kept small and fast to hash)
  local r=$1
  rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
    "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/var/log/*.log \
    "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/tmp/* "$r"/var/tmp/*
  rm -rf "$r"/lib/modules "$r"/usr/lib/modules "$r"/boot/*
  rm -f "$r"/vmlinuz "$r"/vmlinuz.old "$r"/initrd.img "$r"/initrd.img.old
  mkdir -p "$r"/proc "$r"/sys "$r"/dev "$r"/run "$r"/tmp
  chmod 1777 "$r"/tmp
}

# --- 1. the base tarball -----------------------------------------------------------------------------
base_stamp_text=$(
  echo "recipe=$base_recipe suite=$suite include=$base_include extra=$extra_deb"
  dpkg-query -W -f='${Package}=${Version}\n' debootstrap 2>/dev/null
)
if [[ $force == 1 || ! -f $out/base.tar || $(cat "$out/base.stamp" 2>/dev/null) != "$base_stamp_text" ]]; then
  log "debootstrap --variant=minbase $suite (mirror from the host's apt sources)"
  rm -f "$out/base.stamp" "$out/base.tar"
  work="$out/work-base"
  rm -rf "$work"
  mkdir -p "$work"
  debootstrap --variant=minbase --include="$base_include" "$suite" "$work/root" "$mirror" >"$out/debootstrap.log" 2>&1 ||
    { tail -n 30 "$out/debootstrap.log" >&2; die "debootstrap failed (log: $out/debootstrap.log)"; }
  r="$work/root"
  printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
  chmod 755 "$r/usr/sbin/policy-rc.d"
  echo livestick >"$r/etc/hostname"
  chroot_mount "$r"
  in_chroot "$r" apt-get update -qq >&2
  mkdir -p "$r/opt/livestick"
  in_chroot "$r" sh -c "cd /opt/livestick && apt-get download -qq -o APT::Sandbox::User=root $extra_deb" >&2
  chroot_umount
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
  ls "$r"/opt/livestick/*.deb >/dev/null || die "apt-get download $extra_deb gave no .deb"
  tar -C "$r" --numeric-owner --xattrs --xattrs-include='*' -cf "$work/base.tar" .
  mv -f "$work/base.tar" "$out/base.tar"
  rm -rf "$work"
  printf '%s\n' "$base_stamp_text" >"$out/base.stamp"
  log "base.tar: $(du -m "$out/base.tar" | cut -f1) MiB"
fi
base_hash=$(cat "$out/base.stamp" | sha256sum | cut -d' ' -f1)

# --- 2. the variants ---------------------------------------------------------------------------------
variant_root() { # name → a fresh root extracted from base.tar, packages installed
  local name=$1 r
  shift
  r="$out/work-$name/root"
  rm -rf "$out/work-$name"
  mkdir -p "$r"
  tar -C "$r" --numeric-owner --xattrs --xattrs-include='*' -xf "$out/base.tar"
  chroot_mount "$r"
  in_chroot "$r" apt-get update -qq >&2
  log "$name: apt-get install $*"
  # INITRD=No: the kernel's postinst hooks skip their own initramfs; each variant makes its own below.
  in_chroot "$r" env INITRD=No apt-get install -y -qq --no-install-recommends "$@" >"$out/work-$name/apt.log" 2>&1 ||
    { tail -n 30 "$out/work-$name/apt.log" >&2; die "$name: apt-get install failed"; }
  install -m 755 "$here/livestick-job" "$r/livestick-job"
  # dracut 059 mounts a flat squashfs as the root only if it has /proc; systemd-less roots need os-release.
  mkdir -p "$r/proc"
  [[ -e $r/etc/os-release ]] || die "$name: no /etc/os-release in the root"
}
kernel_version_of() { ls "$1/lib/modules" | sort -V | tail -n1; }

finish_variant() { # name squashfs-name
  local name=$1 sq=$2 r w kver
  r="$out/work-$name/root"
  w="$out/work-$name"
  kver=$(kernel_version_of "$r")
  cp "$r/boot/vmlinuz-$kver" "$w/vmlinuz"
  chroot_umount
  strip_root "$r"
  log "$name: mksquashfs $sq ($(du -sm "$r" | cut -f1) MiB tree)"
  mksquashfs "$r" "$w/$sq" "${squash_opts[@]}" >&2
  mkdir -p "$out/$name.new"
  mv "$w/vmlinuz" "$w/initrd.img" "$w/$sq" "$out/$name.new/"
  echo "$kver" >"$out/$name.new/kernel-version"
  du -sm "$r" | cut -f1 >"$out/$name.new/root-mib"
  rm -rf "$out/$name" "$w"
  mv "$out/$name.new" "$out/$name"
}

dracut_stamp_text="recipe=$dracut_recipe base=$base_hash job=$job_hash pkgs=${dracut_pkgs[*]} drivers=$dracut_drivers omit=$dracut_omit squashfs=${squash_opts[*]}"
if [[ $force == 1 || ! -f $out/dracut/squashfs.img || $(cat "$out/dracut/stamp" 2>/dev/null) != "$dracut_stamp_text" ]]; then
  rm -rf "$out/dracut.new"
  variant_root dracut "${dracut_pkgs[@]}"
  r="$out/work-dracut/root"
  kver=$(kernel_version_of "$r")
  log "dracut: initramfs for $kver"
  in_chroot "$r" dracut --no-hostonly --no-hostonly-cmdline --nomdadmconf --nolvmconf --no-early-microcode \
    --add dmsquash-live --omit "$dracut_omit" --drivers "$dracut_drivers" \
    --kver "$kver" --force /boot/livestick-initrd.img >"$out/work-dracut/dracut.log" 2>&1 ||
    { tail -n 30 "$out/work-dracut/dracut.log" >&2; die "dracut failed"; }
  mv "$r/boot/livestick-initrd.img" "$out/work-dracut/initrd.img"
  finish_variant dracut squashfs.img
  printf '%s\n' "$dracut_stamp_text" >"$out/dracut/stamp"
  log "dracut: done ($(du -m "$out/dracut/squashfs.img" | cut -f1) MiB squashfs, $(du -m "$out/dracut/initrd.img" | cut -f1) MiB initrd)"
fi

liveboot_stamp_text="recipe=$liveboot_recipe base=$base_hash job=$job_hash pkgs=${liveboot_pkgs[*]} squashfs=${squash_opts[*]}"
if [[ $force == 1 || ! -f $out/live-boot/filesystem.squashfs || $(cat "$out/live-boot/stamp" 2>/dev/null) != "$liveboot_stamp_text" ]]; then
  rm -rf "$out/live-boot.new"
  variant_root live-boot "${liveboot_pkgs[@]}"
  r="$out/work-live-boot/root"
  kver=$(kernel_version_of "$r")
  log "live-boot: update-initramfs for $kver"
  in_chroot "$r" update-initramfs -c -k "$kver" >"$out/work-live-boot/initramfs.log" 2>&1 ||
    { tail -n 30 "$out/work-live-boot/initramfs.log" >&2; die "update-initramfs failed"; }
  cp "$r/boot/initrd.img-$kver" "$out/work-live-boot/initrd.img"
  finish_variant live-boot filesystem.squashfs
  printf '%s\n' "$liveboot_stamp_text" >"$out/live-boot/stamp"
  log "live-boot: done ($(du -m "$out/live-boot/filesystem.squashfs" | cut -f1) MiB squashfs, $(du -m "$out/live-boot/initrd.img" | cut -f1) MiB initrd)"
fi
log "up to date: $out/{dracut,live-boot}"
