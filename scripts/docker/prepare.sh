#!/usr/bin/env bash
# Get a Docker engine ready for tests/docker without Docker Hub:
#   1. Debian's docker.io and docker-compose (v1) when missing (root + apt-get);
#   2. dockerd started in the background when none answers (its pid in $STATE/dockerd.pid,
#      so scripts/docker/stop.sh stops only what this started);
#   3. stand-ins for the images the project names but cannot pull:
#      python:3.11-slim-bookworm  debootstrap --variant=minbase bookworm with python3,
#                                 python3-venv and ca-certificates, trusting this host's CAs
#                                 (pip in the build needs them), imported with `docker import`;
#      eclipse-mosquitto:2        Debian's mosquitto on that base (scripts/docker/mosquitto/).
#      An image already under either tag that is not a stand-in (the real one, on a machine
#      with Docker Hub) is used as it is.
#
# The debootstrap root and the Mosquitto stand-in are cached as tarballs in
# ${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}/docker/KEY/ (outside the clone, like the
# kernels), so later runs only `docker import` / `docker load` them.  The images this run
# puts into the engine are listed in $STATE/made-images for scripts/docker/stop.sh to
# remove again.  Prints what it does; exits non-zero with the reason when it cannot
# (never silently).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}
state=${BUSBRIDGE_DOCKER_STATE:-$cache/docker/state}
docker=${DOCKER:-/usr/bin/docker}  # docker.io's client: another one on PATH may lack buildx
base_tag=python:3.11-slim-bookworm
mosquitto_tag=eclipse-mosquitto:2
label=org.busbridge.stand-in
mkdir -p "$state"

say() { echo "docker-prepare: $*" >&2; }
die() { say "cannot run: $*"; exit 1; }

# -- 1. packages ---------------------------------------------------------------------------
need=()
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${need[*]} (Debian packages)"
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" \
            >"$state/apt.log" 2>&1 || { tail -20 "$state/apt.log" >&2; die "apt-get failed"; }
    else
        die "missing ${need[*]}; install them as root (apt-get install ${need[*]})"
    fi
fi
[ -x "$docker" ] || docker=$(command -v docker)

# -- 2. the engine ---------------------------------------------------------------------------
if ! "$docker" info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting dockerd needs root"
    say "starting dockerd (log: $state/dockerd.log)"
    dockerd --pidfile "$state/dockerd.pid" >"$state/dockerd.log" 2>&1 &
    echo $! >"$state/dockerd.started"
    for _ in $(seq 1 60); do
        "$docker" info >/dev/null 2>&1 && break
        kill -0 "$(cat "$state/dockerd.started")" 2>/dev/null || {
            tail -20 "$state/dockerd.log" >&2; die "dockerd exited"; }
        sleep 1
    done
    "$docker" info >/dev/null 2>&1 || { tail -20 "$state/dockerd.log" >&2
        die "dockerd did not answer within 60 s"; }
fi
say "engine: $("$docker" version --format 'Docker {{.Server.Version}}' 2>/dev/null)"

# -- 3. stand-in images ------------------------------------------------------------------------
is_stand_in() { [ "$("$docker" image inspect --format "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null)" = 1 ]; }
present() { "$docker" image inspect "$1" >/dev/null 2>&1; }

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then  # the mirror apt uses
    mirror=$(sed -n 's/^URIs: *\(\S*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | grep -v security | head -1 || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' \
                                 /etc/apt/sources.list 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi
packages=python3,python3-venv,python3-dev,python-is-python3,ca-certificates
cas=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null | sha256sum | cut -c1-16)
key=$( { echo "$mirror $packages $cas"; cat "$0"; } | sha256sum | cut -c1-16)
tarball=$cache/docker/$key/bookworm-python.tar

if present "$base_tag" && ! is_stand_in "$base_tag"; then
    say "$base_tag: using the image already there (not a stand-in)"
elif present "$base_tag" && [ "$("$docker" image inspect --format "{{index .Config.Labels \"$label.key\"}}" "$base_tag")" = "$key" ]; then
    say "$base_tag: stand-in already imported"
else
    if [ ! -f "$tarball" ]; then
        [ "$(id -u)" = 0 ] || die "building the stand-in base (debootstrap) needs root"
        root=$cache/docker/$key/root
        rm -rf "$root"
        mkdir -p "$root"
        say "$base_tag stand-in: debootstrap --variant=minbase bookworm from $mirror (about 1-2 min)"
        debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
            >"$cache/docker/$key/debootstrap.log" 2>&1 || {
            tail -20 "$cache/docker/$key/debootstrap.log" >&2; die "debootstrap failed"; }
        # pip inside a build step must trust what this host trusts (a proxy's CA, a lab CA).
        if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
            cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
            chroot "$root" update-ca-certificates >/dev/null 2>&1
        fi
        # apt in the build stage reads the same mirror as this host.
        echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    say "$base_tag stand-in: docker import $tarball"
    "$docker" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        --change "LABEL $label=1 $label.key=$key" \
        "$tarball" "$base_tag" >/dev/null
    echo "$base_tag" >>"$state/made-images"
fi

mkey=$( { echo "$key"; cat "$here/mosquitto/Dockerfile"; } | sha256sum | cut -c1-16)
mtar=$cache/docker/$key/mosquitto-$mkey.tar
if present "$mosquitto_tag" && ! is_stand_in "$mosquitto_tag"; then
    say "$mosquitto_tag: using the image already there (not a stand-in)"
elif present "$mosquitto_tag" && [ "$("$docker" image inspect --format "{{index .Config.Labels \"$label.mosquitto\"}}" "$mosquitto_tag")" = "$mkey" ]; then
    say "$mosquitto_tag: stand-in already there"
elif [ -f "$mtar" ]; then
    say "$mosquitto_tag stand-in: docker load $mtar"
    "$docker" load -q -i "$mtar" >/dev/null
    echo "$mosquitto_tag" >>"$state/made-images"
else
    say "$mosquitto_tag stand-in: Debian's mosquitto on $base_tag (scripts/docker/mosquitto/)"
    DOCKER_BUILDKIT=0 "$docker" build -q --label "$label=1" --label "$label.mosquitto=$mkey" \
        -t "$mosquitto_tag" "$here/mosquitto" >/dev/null
    "$docker" save -o "$mtar.tmp" "$mosquitto_tag" && mv "$mtar.tmp" "$mtar"
    echo "$mosquitto_tag" >>"$state/made-images"
fi
say "ready: $base_tag, $mosquitto_tag"
