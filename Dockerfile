# busbridge board server image.
#
#   docker build -t busbridge .
#   docker run --rm -p 127.0.0.1:7707:7707 busbridge --insecure   # simulated board, this host only
#   docker run --rm -p 7707:7707 --device /dev/i2c-1 --device /dev/spidev0.0 \
#       -v $PWD/board.toml:/etc/busbridge/board.toml:ro busbridge --config /etc/busbridge/board.toml
#
# The simulated board needs --insecure: the server listens on 0.0.0.0 inside the container
# and refuses that without authentication; publishing on 127.0.0.1 keeps it off the LAN.  A
# real board on a lab network authenticates instead: [[server.tokens]] or TLS client
# certificates in its board file (docs/security.md).
#
# Port: BUSBRIDGE_LISTEN (default 0.0.0.0:7707) is where the server listens, and where the
# HEALTHCHECK (`busbridge health`) looks, so both move together:
#   docker run --rm -e BUSBRIDGE_LISTEN=0.0.0.0:9000 -p 127.0.0.1:9000:9000 busbridge --insecure
# The check passes when the server answers the busbridge handshake, a refusal such as
# "unauthorized" included: a board that requires tokens is healthy without holding one.
#
# Device access: the server runs as the unprivileged user "busbridge" (uid 10001),
# member of groups "i2c" (gid I2C_GID, default 998) and "spi" (SPI_GID, 999), the
# gids Raspberry Pi OS gives these groups.  With matching gids on the host, only
# --device is needed.  Otherwise build with the host's gids
#   docker build --build-arg I2C_GID=$(getent group i2c | cut -d: -f3) ...
# or add them at run time: --group-add $(getent group i2c | cut -d: -f3).
# It needs no capabilities and writes nothing: --read-only --cap-drop ALL
# --security-opt no-new-privileges all work (the CI runs it so).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# spidev is a C extension without wheels, and setup.py compiles the preload library that
# gives native programs under `busbridge run` the remote buses: build here, ship the venv.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev linux-libc-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY protocol ./protocol
COPY bridge ./bridge
# The hot path compiled with mypyc (setup.py with BUSBRIDGE_COMPILE=1, docs/board.md):
# the dependencies first (mypyc type-checks against them), then the compiled build,
# then mypy goes again; the last line (-P: not the sources in /src) fails the build
# unless the compiled modules and the C frame decoder (protocol/_native.c) load.
RUN python -m venv /opt/busbridge \
    && /opt/busbridge/bin/pip install --no-cache-dir ".[board,mqtt,metrics]" \
    && /opt/busbridge/bin/pip install --no-cache-dir "mypy==2.4.1" "msgpack-types==0.8.0" \
       "setuptools>=68" \
    && BUSBRIDGE_COMPILE=1 /opt/busbridge/bin/pip install --no-cache-dir --no-build-isolation \
       --no-deps --force-reinstall . \
    && /opt/busbridge/bin/pip uninstall -y mypy msgpack-types ast-serialize librt \
       mypy_extensions pathspec \
    && /opt/busbridge/bin/python -P -c "from bridge.compiled import build_status; \
s = build_status(); print(s.summary()); assert s.state == 'compiled' and s.native"

FROM ${PYTHON_IMAGE}
ARG I2C_GID=998
ARG SPI_GID=999
# What grants access is the gid: a gid the base image already has is used as it is.
RUN (getent group "${I2C_GID}" >/dev/null || groupadd --system --gid "${I2C_GID}" i2c) \
    && (getent group "${SPI_GID}" >/dev/null || groupadd --system --gid "${SPI_GID}" spi) \
    && useradd --system --uid 10001 --gid nogroup --groups "${I2C_GID},${SPI_GID}" \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin busbridge
COPY --from=build /opt/busbridge /opt/busbridge
ENV PATH=/opt/busbridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BUSBRIDGE_LISTEN=0.0.0.0:7707
# Numeric, so the runtime can check it is not root; groups come from /etc/group.
USER 10001
EXPOSE 7707
# A real check: the busbridge handshake with the server (busbridge health), not a TCP port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["busbridge", "--timeout", "3", "health"]
ENTRYPOINT ["busbridge", "serve"]
CMD []
