#!/bin/sh
# The I2C suite's guest kernel: Debian bookworm's linux-source-6.1 with CONFIG_I2C_VIRTIO.
# Prints the cached bzImage path on the last line.
set -eu
here=$(dirname "$0")
exec "$here/build-kernel.sh" kernel-i2c "${LINUX_SOURCE:-/usr/src/linux-source-6.1.tar.xz}" -- \
    64BIT PCI PCI_MSI ACPI PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE BLK_DEV_INITRD RD_GZIP \
    DEVTMPFS BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS TMPFS SHMEM EVENTFD FUTEX MULTIUSER \
    POSIX_TIMERS UNIX98_PTYS VIRTIO_MENU VIRTIO VIRTIO_PCI I2C I2C_CHARDEV I2C_VIRTIO
