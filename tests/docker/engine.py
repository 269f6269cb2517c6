"""The Docker engine, driven through docker.io's own client, for the image and compose suites.

Every container, network and volume these tests make carries the session's label or
compose project name and is removed on the way out; images built here are removed too
(the tagged one, and the build stage's untagged layers this session left behind).  The
stand-in base images of scripts/docker/prepare.sh are kept: they are a cache, like the
kernels of the QEMU suites.  Ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]
REQUIRED = os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1"
BASE_IMAGES = ("python:3.11-slim-bookworm", "eclipse-mosquitto:2")
LABEL = "org.busbridge.test"
PREPARE = "scripts/docker/prepare.sh"


def missing(why: str) -> None:
    """Skip with the exact reason, or fail when CI says the suite must run."""
    if REQUIRED:
        pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}", pytrace=False)
    pytest.skip(why)


def docker_client() -> str | None:
    """docker.io's client: another ``docker`` earlier on PATH may lack what builds need."""
    given = os.environ.get("DOCKER")
    if given:
        return given
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Engine:
    """One test session's use of the engine: names, labels and what to clean up."""

    exe: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    #: What the closing report prints (image size, build and health times).
    figures: dict[str, Any] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([self.exe, *args], capture_output=True, text=True, timeout=timeout,
                           check=False, env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        out = self.run(kind, "inspect", name).stdout
        data = json.loads(out)
        assert isinstance(data, list)
        assert len(data) == 1
        return dict(data[0])

    def image_ids(self, dangling: bool = False) -> set[str]:
        extra = ["--filter", "dangling=true"] if dangling else []
        return set(self.run("images", "-a", "-q", "--no-trunc", *extra).stdout.split())

    def container(self, image: str, *args: str, options: Sequence[str] = ()) -> str:
        """Start a detached container of ``image`` (labelled for cleanup); its name."""
        name = f"bbtest-{self.session}-{uuid.uuid4().hex[:6]}"
        self.run("run", "-d", "--name", name, "--label", f"{LABEL}={self.session}",
                 *options, image, *args)
        return name

    def health(self, name: str) -> str:
        state = self.inspect("container", name)["State"]
        if not state.get("Running"):
            return "exited"
        return str((state.get("Health") or {}).get("Status", "none"))

    def wait_healthy(self, name: str, timeout: float = 180) -> float:
        """Seconds from now until the engine calls ``name`` healthy (fails on exit/timeout)."""
        t0 = time.monotonic()
        while True:
            status = self.health(name)
            if status == "healthy":
                return time.monotonic() - t0
            if status == "exited" or time.monotonic() - t0 > timeout:
                logs = self.run("logs", name, check=False)
                raise AssertionError(f"{name} is {status} after {time.monotonic() - t0:.0f} s:"
                                     f"\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}\n"
                                     f"{json.dumps(self.inspect('container', name)['State'])}")
            time.sleep(0.5)

    def published(self, name: str, port: str) -> list[tuple[str, int]]:
        """Where the container's ``port`` (e.g. ``7707/tcp``) is published on the host."""
        ports = self.inspect("container", name)["NetworkSettings"]["Ports"] or {}
        return [(b["HostIp"], int(b["HostPort"])) for b in ports.get(port) or []]

    def remove_containers(self) -> None:
        ids = self.run("ps", "-a", "-q", "--filter", f"label={LABEL}={self.session}").stdout
        if ids.split():
            self.run("rm", "-f", "-v", *ids.split(), check=False)


def find_engine() -> Engine:
    exe = docker_client()
    if exe is None:
        missing(f"no docker client (run {PREPARE} as root: it installs docker.io)")
        raise AssertionError
    p = subprocess.run([exe, "version", "--format", "{{.Server.Version}}"],
                       capture_output=True, text=True, timeout=60, check=False)
    if p.returncode != 0:
        why = [line for line in p.stderr.splitlines() if line.strip()][-1:] or ["no answer"]
        missing(f"no Docker engine answers ({why[0].strip()[:200]}); run {PREPARE}")
    engine = Engine(exe)
    engine.figures["engine"] = p.stdout.strip()
    for image in BASE_IMAGES:
        if engine.run("image", "inspect", image, check=False).returncode != 0:
            missing(f"image {image} is not there (Docker Hub is out of reach here: "
                    f"{PREPARE} builds a stand-in)")
    return engine
