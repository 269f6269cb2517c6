#!/bin/sh
# The SPI suites' guest kernel: sid's linux-source-7.2 with CONFIG_SPI_VIRTIO, SPI_SPIDEV and
# a test-only board file (busbridge_e2e_spi.c), built inside the sid chroot, plus the kernel
# tree's tools/spi/spidev_test and spidev_fdx built static.  Networking, 9p and epoll are
# there for tests/e2e/test_spi_chain.py, whose guest runs the host's Python (busbridge serve)
# from the host's file tree.
#
# Cached in ${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}/kernel-spi/KEY/{bzImage,spidev_test,
# spidev_fdx}; prints the bzImage path as the last line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}
root=$("$here/build-sid-chroot.sh" | tail -n1)
options="64BIT PCI PCI_MSI ACPI PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE BLK_DEV_INITRD RD_GZIP \
DEVTMPFS BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS TMPFS SHMEM EVENTFD FUTEX MULTIUSER \
POSIX_TIMERS UNIX98_PTYS VIRTIO_MENU VIRTIO VIRTIO_PCI SPI SPI_MASTER SPI_SPIDEV SPI_VIRTIO \
EPOLL NET INET UNIX NETDEVICES NET_CORE VIRTIO_NET NET_9P NET_9P_VIRTIO NETWORK_FILESYSTEMS 9P_FS"
src=$(ls "$root"/usr/src/linux-source-*.tar.xz | tail -n1)
key=$( { echo "$root $options"; stat -c '%n %s %Y' "$src"; cat "$here/busbridge_e2e_spi.c" \
    "$here/build-kernel.sh" "$0"; } | sha256sum | cut -c1-16)
out=$cache/kernel-spi/$key
if [ -f "$out/bzImage" ] && [ -f "$out/spidev_test" ]; then
    echo "$out/bzImage"
    exit 0
fi
mkdir -p "$root/busbridge-e2e"
cp "$here/build-kernel.sh" "$here/busbridge_e2e_spi.c" "$root/busbridge-e2e/"
"$here/in-chroot.sh" "$root" env BUSBRIDGE_CACHE=/busbridge-e2e/cache \
    /busbridge-e2e/build-kernel.sh kernel-spi "/usr/src/${src##*/}" \
    /busbridge-e2e/busbridge_e2e_spi.c -- $options > "$root/busbridge-e2e/kernel.path"
inner=$(tail -n1 "$root/busbridge-e2e/kernel.path")

echo "kernel-spi: building spidev_test and spidev_fdx (static)" >&2
"$here/in-chroot.sh" "$root" sh -eu -c "
    cd /busbridge-e2e && rm -rf tools && mkdir tools && cd tools
    tar -xf /usr/src/${src##*/} --wildcards --strip-components=1 '*/tools/spi/spidev_test.c' \
        '*/tools/spi/spidev_fdx.c'
    gcc -static -O2 -o spidev_test tools/spi/spidev_test.c
    gcc -static -O2 -o spidev_fdx tools/spi/spidev_fdx.c
" >&2
mkdir -p "$out.tmp"
cp "$root$inner" "$out.tmp/bzImage"
cp "$root/busbridge-e2e/tools/spidev_test" "$root/busbridge-e2e/tools/spidev_fdx" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/bzImage"
