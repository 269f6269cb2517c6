#!/usr/bin/env bash
# Undo scripts/docker/prepare.sh: remove the stand-in images it put into the engine (they
# stay cached as tarballs under BUSBRIDGE_CACHE), then stop the dockerd it started (and
# only that one: by the pid it recorded; SIGTERM, then up to 30 s to stop its containers).
set -euo pipefail
cache=${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}
state=${BUSBRIDGE_DOCKER_STATE:-$cache/docker/state}
docker=${DOCKER:-/usr/bin/docker}
label=org.busbridge.stand-in
if [ -f "$state/made-images" ]; then
    for image in $(sort -u "$state/made-images"); do
        # Only a stand-in: never an image someone else put under the same tag meanwhile.
        if [ "$("$docker" image inspect --format "{{index .Config.Labels \"$label\"}}" \
                "$image" 2>/dev/null)" = 1 ]; then
            echo "docker-stop: removing the stand-in $image (cached under $cache/docker)" >&2
            "$docker" rmi "$image" >/dev/null || true
        fi
    done
    rm -f "$state/made-images"
fi
pidfile=$state/dockerd.started
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
rm -f "$pidfile"
if kill -0 "$pid" 2>/dev/null; then
    echo "docker-stop: stopping the dockerd this run started (pid $pid)" >&2
    kill -TERM "$pid"
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || exit 0
        sleep 1
    done
    echo "docker-stop: dockerd $pid did not exit within 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
fi
