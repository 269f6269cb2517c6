#!/bin/sh
# Guest /init: load the stock kernel's modules, create an i2c-stub adapter, then
# run the busbridge board server from the host's (read-only, 9p) file tree
# against its /dev/i2c-N: bus "stub", and bus "1" on the i2c-virtio adapter
# when QEMU gives the guest a vhost-user-i2c-pci device.  Settings arrive as
# environment variables through the kernel command line (unknown name=value
# parameters go to init):
#   BB_PYTHON   the host's Python that has busbridge installed (required)
#   BB_CHIPS    i2c-stub chip_addr list, e.g. 0x48,0x50
#   BB_LIFETIME seconds before the guest powers itself off even if nobody stops
#               QEMU (a crashed test run must not leave a guest behind); default 900
#   BB_RECORD   if set: the server records every transaction (serve --record) to
#               session.bbrec on the writable 9p share tagged "rec" (a host directory)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "BUSBRIDGE-GUEST-FAIL: $*"; poweroff -f; }

while read -r m; do
  case "$m" in
    *i2c-stub.ko) insmod "/mods/$m" chip_addr="${BB_CHIPS:-0x48,0x50}" || fail "insmod $m" ;;
    *) insmod "/mods/$m" || fail "insmod $m" ;;
  esac
done < /mods/order

ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 || fail "no eth0"
ip link set eth0 up

mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || fail "9p mount"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
# The one writable place the server needs lives in the guest's devtmpfs: a tmpfs
# over /host/tmp (or any host directory) could hide the host's checkout.
mkdir -p /host/dev/busbridge

bus=
vbus=
for n in /sys/bus/i2c/devices/i2c-*; do
  grep -q "stub" "$n/name" 2>/dev/null && bus=$(basename "$n")
  grep -q "virtio" "$n/name" 2>/dev/null && vbus=$(basename "$n")
done
[ -n "$bus" ] || fail "no i2c-stub adapter"
[ -e "/dev/$bus" ] || fail "/dev/$bus missing"
[ -z "$vbus" ] || [ -e "/dev/$vbus" ] || fail "/dev/$vbus missing"

cat > /host/dev/busbridge/board.toml <<EOF
name = "i2c-stub-guest"
description = "Debian stock kernel, i2c-stub on /dev/$bus"
[server]
listen = "0.0.0.0:7707"
# Reached only through QEMU's user-mode port forward to the host's loopback.
insecure = true
# Generous: a request may cross this TCG guest, QEMU and a vhost-user agent.
request_timeout_ms = 60000
[[i2c]]
name = "stub"
backend = "linux"
device = "/dev/$bus"
description = "i2c-stub (SMBus only)"
EOF
if [ -n "$vbus" ]; then
  cat >> /host/dev/busbridge/board.toml <<EOF
# Named like the far end's bus (the simulated board's "1": TMP117 @0x48, EEPROM @0x50),
# so the conformance kit's device checks find the devices they know.
[[i2c]]
name = "1"
backend = "linux"
device = "/dev/$vbus"
description = "i2c-virtio (full I2C, through QEMU's vhost-user-i2c-pci)"
EOF
fi
set --
if [ -n "$BB_RECORD" ]; then
  mkdir -p /host/dev/busbridge/rec
  mount -t 9p -o trans=virtio,version=9p2000.L rec /host/dev/busbridge/rec || fail "9p rec mount"
  set -- --record /dev/busbridge/rec/session.bbrec
fi
echo "BUSBRIDGE-GUEST-READY: /dev/$bus ${vbus:+/dev/$vbus}"
timeout "${BB_LIFETIME:-900}" chroot /host /usr/bin/env -i PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 HOME=/dev/busbridge \
  "$BB_PYTHON" -m bridge.cli serve --config /dev/busbridge/board.toml "$@"
echo "BUSBRIDGE-GUEST-SERVER-EXIT: $?"
poweroff -f
