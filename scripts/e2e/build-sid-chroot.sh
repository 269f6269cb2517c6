#!/bin/sh
# A Debian sid chroot with QEMU (vhost-user-spi-pci) and linux-source-7.2 (CONFIG_SPI_VIRTIO):
# the pieces the SPI suite needs and bookworm lacks.  Needs root and debootstrap.
#
# Cached in ${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}/sid-chroot/KEY/root; prints that path
# as the last line.  The host's apt sources are left alone.
set -eu
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages="qemu-system-x86 linux-source-7.2 gcc make libc6-dev flex bison bc libelf-dev \
xz-utils cpio file"
cache=${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}
key=$( { echo "$mirror $packages"; cat "$0"; } | sha256sum | cut -c1-16)
out=$cache/sid-chroot/$key
if [ -f "$out/done" ]; then
    echo "$out/root"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "building the sid chroot needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
echo "sid-chroot: debootstrap --variant=minbase sid (about 1 minute)" >&2
debootstrap --variant=minbase sid "$out/root" "$mirror" >"$out/debootstrap.log" 2>&1 || {
    tail -20 "$out/debootstrap.log" >&2; exit 1; }
# The archive snapshot's sid Release file may be past its Valid-Until date;
# signatures are still checked.
echo 'Acquire::Check-Valid-Until "false";' > "$out/root/etc/apt/apt.conf.d/99busbridge-e2e"
echo "sid-chroot: installing $packages" >&2
"$(dirname "$0")/in-chroot.sh" "$out/root" sh -c \
    "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages" \
    >"$out/install.log" 2>&1 || { tail -20 "$out/install.log" >&2; exit 1; }
touch "$out/done"
echo "$out/root"
