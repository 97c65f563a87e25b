#!/bin/bash
# Builds the kernel oracle used by test/kernel/: Debian's own kernel (vmlinuz) plus a small initramfs
# (busybox-static, the device-mapper/ext4/squashfs/crypto modules, dmsetup, cryptsetup, e2fsprogs) whose
# /init runs one job script read from the first virtio disk and powers off. See scripts/kernel/README.md.
#
#   scripts/kernel/build.sh            build into .cache/kernel/ unless the stamp says it is up to date
#   scripts/kernel/build.sh --force    rebuild even when up to date
#
# Environment: LIVESTICK_KERNEL_DIR overrides the output directory (default <repo>/.cache/kernel).
# Needs root (apt-get install of missing host packages, apt-get download) on Debian 12.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${LIVESTICK_KERNEL_DIR:-$repo/.cache/kernel}
force=0
[[ ${1:-} == --force ]] && force=1

log() { echo "kernel/build.sh [${SECONDS}s]: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Modules the guest needs; their depends= closure is added and ordered automatically. crc32c_generic is
# named explicitly because ext4/jbd2/libcrc32c reach it only through a softdep on the "crc32c" alias.
wanted_modules=(
  virtio_ring virtio virtio_pci virtio_blk
  dm-mod dm-bufio dm-snapshot dm-crypt
  crc32c_generic ext4 squashfs loop
  fat vfat exfat nls_cp437 nls_iso8859-1 nls_utf8
  ecb xts af_alg algif_skcipher algif_hash
)
host_binaries=(dmsetup cryptsetup e2fsck mke2fs)

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

# --- host packages -----------------------------------------------------------------------------------
apt_updated=0
apt_update_once() {
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
  fi
}
need_pkgs=()
command -v dmsetup >/dev/null || need_pkgs+=(dmsetup)
command -v cryptsetup >/dev/null || need_pkgs+=(cryptsetup-bin)
{ command -v e2fsck && command -v mke2fs; } >/dev/null || need_pkgs+=(e2fsprogs)
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
if ((${#need_pkgs[@]} > 0)); then
  [[ $(id -u) == 0 ]] || die "missing host packages (${need_pkgs[*]}); run as root or apt-get install them"
  apt_update_once
  log "apt-get install ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi
busybox=/bin/busybox
[[ -x $busybox ]] || die "busybox-static did not provide $busybox"

# --- which kernel --------------------------------------------------------------------------------------
kernel_pkg_of_meta() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}
# apt-cache takes seconds here; remember its answer until the package lists change.
lists_key() { stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2>/dev/null | sha256sum | cut -d' ' -f1; }
resolve_kernel() {
  kpkg=$(kernel_pkg_of_meta)
  if [[ -z $kpkg ]]; then
    apt_update_once
    kpkg=$(kernel_pkg_of_meta)
  fi
  [[ -n $kpkg ]] || die "cannot find the kernel package that linux-image-amd64 depends on (apt-cache depends)"
  kver_pkg=$(apt-cache show "$kpkg" | sed -n 's/^Version: //p' | head -n1)
  [[ -n $kver_pkg ]] || die "apt-cache show $kpkg gave no version"
  printf '%s\n%s\n%s\n' "$(lists_key)" "$kpkg" "$kver_pkg" >"$out/apt-resolved"
}
kpkg='' kver_pkg=''
if [[ $force == 0 && -f $out/apt-resolved ]] && [[ $(head -n1 "$out/apt-resolved") == "$(lists_key)" ]]; then
  kpkg=$(sed -n 2p "$out/apt-resolved")
  kver_pkg=$(sed -n 3p "$out/apt-resolved")
fi
[[ -n $kpkg && -n $kver_pkg ]] || resolve_kernel

stamp_text=$(
  echo "kernel=$kpkg=$kver_pkg"
  dpkg-query -W -f='${Package}=${Version}\n' dmsetup cryptsetup-bin e2fsprogs busybox-static libc6 libgcc-s1 2>/dev/null
  echo "modules=${wanted_modules[*]}"
  echo "binaries=${host_binaries[*]}"
  echo "script=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
)
if [[ $force == 0 && -f $out/stamp && -f $out/vmlinuz && -f $out/initramfs.cpio.gz ]] &&
  [[ $(cat "$out/stamp") == "$stamp_text" ]]; then
  log "up to date ($kpkg $kver_pkg)"
  exit 0
fi

log "building for $kpkg $kver_pkg into $out"
rm -f "$out/stamp"
work="$out/work"
rm -rf "$work"
mkdir -p "$work" "$out/debs"

# --- fetch and unpack the kernel package ---------------------------------------------------------------
deb=$(ls "$out/debs/${kpkg}_"*"_amd64.deb" 2>/dev/null | grep -F "_${kver_pkg//:/%3a}_" | head -n1 || true)
if [[ -z $deb ]]; then
  rm -f "$out/debs/"*.deb
  log "apt-get download $kpkg=$kver_pkg (~70 MB)"
  if ! (cd "$out/debs" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg=$kver_pkg" >&2); then
    apt_update_once
    (cd "$out/debs" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg=$kver_pkg" >&2)
  fi
  deb=$(ls "$out/debs/${kpkg}_"*"_amd64.deb" | head -n1)
fi
log "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$work/pkg"
vmlinuz=$(ls "$work"/pkg/boot/vmlinuz-* | head -n1)
kdir=$(ls -d "$work"/pkg/lib/modules/*/ | head -n1)
kdir=${kdir%/}
[[ -f $vmlinuz && -d $kdir/kernel ]] || die "unexpected layout in $deb"

# --- module dependency closure, in load order -------------------------------------------------------
# Index every module file by its canonical name (dashes → underscores), then walk depends= depth-first so
# each module comes after everything it depends on.
declare -A mod_file=()
while read -r base f; do
  base=${base%%.ko*}
  mod_file[${base//-/_}]=$f
done < <(find "$kdir/kernel" \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' \) -printf '%f %p\n' | sort)
builtin_names=" "
if [[ -f $kdir/modules.builtin ]]; then
  builtin_names+=$(sed 's|.*/||; s|\.ko$||; s|-|_|g' "$kdir/modules.builtin" | tr '\n' ' ')
fi
mod_tmp="$work/mod-tmp"
mkdir -p "$mod_tmp"
plain_ko() { # module name → path of an uncompressed .ko
  local f=${mod_file[$1]}
  case $f in
    *.ko) echo "$f" ;;
    *.ko.xz) xz -dc "$f" >"$mod_tmp/$1.ko" && echo "$mod_tmp/$1.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$mod_tmp/$1.ko" && echo "$mod_tmp/$1.ko" ;;
  esac
}
module_depends() { # depends= field of .modinfo, as canonical names
  tr '\0' '\n' <"$(plain_ko "$1")" | sed -n 's/^depends=//p' | head -n1 | tr ',' '\n' | tr '-' '_' | sed '/^$/d'
}

declare -A visiting=() placed=()
order=()
visit() {
  local m=${1//-/_} d
  [[ -n ${placed[$m]:-} ]] && return 0
  if [[ -z ${mod_file[$m]:-} ]]; then
    if [[ $builtin_names == *" $m "* ]]; then
      placed[$m]=builtin
      return 0
    fi
    die "module $m is neither a module file nor built in"
  fi
  [[ -n ${visiting[$m]:-} ]] && die "module dependency cycle at $m"
  visiting[$m]=1
  for d in $(module_depends "$m"); do visit "$d"; done
  placed[$m]=1
  order+=("$m")
}
for m in "${wanted_modules[@]}"; do visit "$m"; done
log "modules: ${order[*]}"

# --- initramfs tree ------------------------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,mnt,lib/livestick-modules}
for m in "${order[@]}"; do
  cp "$(plain_ko "$m")" "$root/lib/livestick-modules/$m.ko"
done
printf '%s\n' "${order[@]}" >"$root/etc/livestick-modules"

copy_with_parents() { # host file → same path inside the tree (symlinks resolved)
  local dest="$root$1"
  [[ -e $dest ]] && return 0
  mkdir -p "$(dirname "$dest")"
  cp -L "$1" "$dest"
}
copy_libs_of() {
  local lib
  for lib in $(ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p'); do
    copy_with_parents "$lib"
  done
}
for b in "${host_binaries[@]}"; do
  path=$(command -v "$b")
  mkdir -p "$root/usr/sbin"
  cp -L "$path" "$root/usr/sbin/$b"
  copy_libs_of "$path"
done
libgcc=$(ldconfig -p | sed -n 's/^[[:space:]]*libgcc_s\.so\.1 (libc6,x86-64) => //p' | head -n1)
[[ -n $libgcc ]] || die "libgcc_s.so.1 not found (ldconfig -p)"
copy_with_parents "$libgcc"
[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"

cp "$busybox" "$root/bin/busybox"
while IFS= read -r applet; do
  name=$(basename "$applet")
  [[ -e $root/usr/sbin/$name || -e $root/$applet || -L $root/$applet ]] && continue
  mkdir -p "$(dirname "$root/$applet")"
  ln -s /bin/busybox "$root/$applet"
done < <("$busybox" --list-full | sort)

# Busybox sh prefers its own applets over PATH (mke2fs is one); the job shell gets functions that run the
# real host binaries instead.
for b in "${host_binaries[@]}"; do
  echo "$b() { /usr/sbin/$b \"\$@\"; }"
done >"$root/etc/livestick-job-env"

cat >"$root/init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm /run/cryptsetup /run/lock
while read -r m; do
  insmod "/lib/livestick-modules/$m.ko" 2>/tmp/insmod.err || echo "livestick-init: insmod $m failed: $(cat /tmp/insmod.err)"
done </etc/livestick-modules
export DM_DISABLE_UDEV=1
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
if [ -b /dev/vda ]; then
  tr -d '\000' </dev/vda >/tmp/job.sh
  cd /tmp
  printf '\n@@LIVESTICK-JOB-BEGIN@@\n'
  sh -c '. /etc/livestick-job-env && . /tmp/job.sh' </dev/null
  status=$?
  cd /
  printf '\n@@LIVESTICK-JOB-END status=%d@@\n' "$status"
else
  echo "livestick-init: no job disk /dev/vda"
fi
sync
poweroff -f
EOF
chmod 755 "$root/init"

# --- pack, deterministically -------------------------------------------------------------------------
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9n >"$work/initramfs.cpio.gz"
cp "$vmlinuz" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
printf '%s\n' "$stamp_text" >"$out/stamp"
rm -rf "$work"
log "done: $out/vmlinuz, $out/initramfs.cpio.gz ($(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
