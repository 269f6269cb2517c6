#!/bin/sh
# Run a command in a chroot with /proc, /sys and /dev available, in a private mount
# namespace so nothing stays mounted afterwards.
# usage: [IN_CHROOT_BIND="DIR..."] [IN_CHROOT_HOSTROOT=DIR] in-chroot.sh ROOT COMMAND...
#   IN_CHROOT_BIND: host directories bind-mounted at the same path inside (sockets, images)
#   IN_CHROOT_HOSTROOT: the host's whole file tree (recursively) at DIR inside, e.g. for a
#                       guest that runs the host's Python over 9p
set -eu
root=$1; shift
exec unshare --mount --propagation private sh -c '
    root=$1; shift
    if [ -n "${IN_CHROOT_HOSTROOT:-}" ]; then
        mkdir -p "$root$IN_CHROOT_HOSTROOT"
        mount --rbind / "$root$IN_CHROOT_HOSTROOT"
    fi
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    for dir in ${IN_CHROOT_BIND:-}; do
        mkdir -p "$root$dir"
        mount --bind "$dir" "$root$dir"
    done
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
' in-chroot "$root" "$@"
