"""Session fixtures of the Docker suites: the engine, and the image built from the Dockerfile.

The image is built twice from the repository's unmodified Dockerfile (cold, then
from the layer cache) and removed at the end, with the build stage's untagged
layers this session left behind; every labelled container goes too.  The closing
report prints the figures (image size, build times, time to healthy).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .engine import LABEL, REPO, Engine, find_engine

_FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    e = find_engine()
    e.figures = _FIGURES
    try:
        yield e
    finally:
        e.remove_containers()


@pytest.fixture(scope="session")
def image(engine: Engine) -> Iterator[str]:
    tag = f"busbridge-test:{engine.session}"
    before = engine.image_ids()
    # The classic builder: its layers are plain images, so what this build made can be
    # found and removed afterwards.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    try:
        for what, extra in (("cold", ["--no-cache"]), ("cached", [])):
            t0 = time.monotonic()
            engine.run("build", *extra, "-t", tag, "--label", f"{LABEL}={engine.session}",
                       str(REPO), timeout=1800, env=env)
            engine.figures[f"build {what} s"] = round(time.monotonic() - t0, 1)
        size = int(engine.inspect("image", tag)["Size"])
        engine.figures["image size MB"] = round(size / 1e6, 1)
        yield tag
    finally:
        engine.remove_containers()
        engine.run("rmi", "-f", tag, check=False)
        made = engine.image_ids(dangling=True) - before
        if made:  # the build stage's layers, untagged: this session's only
            engine.run("rmi", "-f", *sorted(made), check=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("docker figures")
        for k, v in _FIGURES.items():
            terminalreporter.write_line(f"{k}: {v}")
