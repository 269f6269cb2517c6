#!/usr/bin/env bash
# Stop the dockerd that scripts/docker/prepare.sh started (and only that one): by the pid
# it recorded, SIGTERM, then up to 30 s for it to stop its containers and exit.
set -euo pipefail
cache=${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}
state=${BUSBRIDGE_DOCKER_STATE:-$cache/docker/state}
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
