#!/bin/sh
# The guests' base initramfs: static busybox (with its i2c applets) and an /init that
# mounts proc/sys/devtmpfs, runs /test.sh (appended per run as a second cpio archive
# by the test), prints "E2E-EXIT <status>" and powers off.
#
# usage: build-initramfs.sh [BUSYBOX]   (default /bin/busybox from busybox-static)
# Cached in ${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}/initramfs/KEY/initramfs.cpio.gz;
# prints that path as the last line.
set -eu
busybox=${1:-/bin/busybox}
[ -x "$busybox" ] || { echo "$busybox missing (apt-get install busybox-static)" >&2; exit 1; }
file "$busybox" 2>/dev/null | grep -q 'dynamically' && {
    echo "$busybox is dynamically linked; use busybox-static's" >&2; exit 1; }
cache=${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}
key=$( { sha256sum "$busybox"; cat "$0"; } | sha256sum | cut -c1-16)
out=$cache/initramfs/$key
if [ -f "$out/initramfs.cpio.gz" ]; then
    echo "$out/initramfs.cpio.gz"
    exit 0
fi
mkdir -p "$cache/initramfs"
work=$(mktemp -d "$cache/initramfs/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/proc" "$root/sys" \
    "$root/dev" "$root/tmp" "$root/etc"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo E2E-BOOTED
if [ -f /test.sh ]; then
    sh /test.sh
    status=$?
else
    status=127
fi
echo "E2E-EXIT $status"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initramfs.cpio.gz"
mkdir -p "$out.tmp"
mv "$work/initramfs.cpio.gz" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/initramfs.cpio.gz"
