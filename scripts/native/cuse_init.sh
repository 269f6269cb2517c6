#!/bin/sh
# Guest /init for `busbridge mount` (CUSE) on Debian's stock kernel: load the stock
# modules (cuse among them), mount the host's file tree read-only over 9p, and run
# the host-side script $BB_SCRIPT inside it (chroot).  The script mounts the remote
# buses with busbridge and runs native programs against the devices it creates.
# Settings arrive on the kernel command line (unknown name=value go to init):
#   BB_SCRIPT   absolute path of the script on the host's tree (required)
#   BB_PYTHON   the host's Python that has busbridge installed (required)
#   BB_SERVER   HOST:PORT of the busbridge server, as the guest reaches it
#   BB_LIFETIME seconds before the guest powers itself off whatever happens; default 600
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "BUSBRIDGE-GUEST-FAIL: $*"; poweroff -f; }

while read -r m; do
  case "$m" in
    *i2c-stub.ko|*i2c-dev.ko) continue ;;  # no kernel adapters here: only CUSE devices
    *) insmod "/mods/$m" || fail "insmod $m" ;;
  esac
done < /mods/order
[ -e /dev/cuse ] || fail "no /dev/cuse after loading the cuse module"

ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 || fail "no eth0"
ip link set eth0 up

mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || fail "9p mount"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/busbridge
echo "BUSBRIDGE-GUEST-READY: $(cat /proc/version)"
timeout "${BB_LIFETIME:-600}" chroot /host /usr/bin/env -i \
  PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/dev/busbridge PYTHONDONTWRITEBYTECODE=1 \
  BB_PYTHON="$BB_PYTHON" BB_SERVER="$BB_SERVER" /bin/sh "$BB_SCRIPT"
echo "BUSBRIDGE-GUEST-DONE: $?"
poweroff -f
