#!/usr/bin/env bash
# The Docker step of .ci/run: an engine and the stand-in base images (prepare.sh), then
# tests/docker (the image from the unmodified Dockerfile, run locked down; the compose
# deployment with Mosquitto, the board and the CI job), then the dockerd it started is
# stopped again (stop.sh).  The tests remove the containers, networks, volumes and images
# they made; the stand-in bases stay cached for the next run.
#
# When the engine cannot be had (not root, no apt-get, dockerd will not start) it says why;
# with BUSBRIDGE_E2E_REQUIRED=1 (CI) that fails the step, otherwise the step is reported
# as NOT RUN, loudly, and the rest of .ci/run goes on.
set -uo pipefail
cd "$(dirname "$0")/../.."
trap 'bash scripts/docker/stop.sh' EXIT
if ! bash scripts/docker/prepare.sh; then
    if [ "${BUSBRIDGE_E2E_REQUIRED:-}" = 1 ]; then
        echo "docker: FAILED: the Docker step cannot run (reason above), and" \
             "BUSBRIDGE_E2E_REQUIRED=1 says it must" >&2
        exit 1
    fi
    echo "docker: NOT RUN: the Docker step cannot run here (reason above)" >&2
    exit 0
fi
start=$(date +%s)
pytest -m slow -p no:cacheprovider -rA tests/docker
rc=$?
echo "docker: tests/docker took $(( $(date +%s) - start )) s" >&2
exit $rc
