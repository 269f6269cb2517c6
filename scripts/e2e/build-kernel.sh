#!/bin/sh
# Build a small tinyconfig-based x86_64 kernel for the end-to-end suites, cached.
#
# usage: build-kernel.sh NAME SOURCE_TARBALL [EXTRA_C_FILE] -- OPTION...
#   NAME            cache name (kernel-i2c, kernel-spi, ...)
#   SOURCE_TARBALL  e.g. /usr/src/linux-source-6.1.tar.xz (Debian's linux-source-*)
#   EXTRA_C_FILE    optional test-only source file built into the kernel (drivers/misc)
#   OPTION          CONFIG_ names without the prefix, enabled on top of tinyconfig
#
# The result lands in ${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}/NAME/KEY/bzImage where
# KEY hashes the tarball's identity, the options, the extra file and this script: a
# changed config rebuilds, an unchanged one returns at once.  Prints the bzImage path
# as the last line of stdout.
set -eu

name=$1; src=$2; shift 2
extra=""
if [ "${1:-}" != "--" ]; then extra=$1; shift; fi
[ "${1:-}" = "--" ] || { echo "usage: $0 NAME TARBALL [EXTRA_C] -- OPTIONS..." >&2; exit 2; }
shift
options="$*"

[ -f "$src" ] || { echo "kernel source $src missing (apt-get install linux-source-*)" >&2; exit 1; }
cache=${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}
key=$( {
    stat -c '%n %s %Y' "$src"
    echo "$options"
    [ -z "$extra" ] || cat "$extra"
    cat "$0"
} | sha256sum | cut -c1-16)
out=$cache/$name/$key
if [ -f "$out/bzImage" ]; then
    echo "$name: cached $out/bzImage" >&2
    echo "$out/bzImage"
    exit 0
fi

mkdir -p "$cache/$name"
work=$(mktemp -d "$cache/$name/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "$name: unpacking $src" >&2
tar -xf "$src" -C "$work"
tree=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)
cd "$tree"

if [ -n "$extra" ]; then
    cp "$extra" drivers/misc/busbridge_e2e.c
    echo 'obj-y += busbridge_e2e.o' >> drivers/misc/Makefile
fi

echo "$name: configuring (tinyconfig + $options)" >&2
make -s ARCH=x86_64 tinyconfig >&2
for opt in $options; do scripts/config --enable "$opt"; done
make -s ARCH=x86_64 olddefconfig >&2
# A second pass picks up options whose dependencies the first pass enabled.
for opt in $options; do scripts/config --enable "$opt"; done
make -s ARCH=x86_64 olddefconfig >&2
missing=""
for opt in $options; do
    grep -q "^CONFIG_$opt=y" .config || missing="$missing $opt"
done
if [ -n "$missing" ]; then
    echo "$name: options did not stick:$missing" >&2
    exit 1
fi

jobs=$(nproc)
echo "$name: make -j$jobs bzImage (about 4 minutes on 2 cores)" >&2
start=$(date +%s)
make ARCH=x86_64 -j"$jobs" bzImage 2>&1 | grep -E '^ *(LD|BUILD|Kernel:)|error|Error' >&2 || true
[ -f arch/x86/boot/bzImage ] || { echo "$name: kernel build failed" >&2; exit 1; }
echo "$name: built in $(( $(date +%s) - start )) s" >&2

mkdir -p "$out.tmp"
cp arch/x86/boot/bzImage "$out.tmp/bzImage"
cp .config "$out.tmp/config"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/bzImage"
