"""Unmodified native programs against the simulated board, through `busbridge run`.

Each test runs real programs (Debian's i2c-tools and spi-tools, a C program
compiled here, Node's i2c-bus from npm) as child processes of `busbridge run`
against a real server on 127.0.0.1.  Missing prerequisites skip with the
reason, or fail under BUSBRIDGE_E2E_REQUIRED=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Running, start_server_thread, stop_server_thread

from bridge.config import load_board
from bridge.native.launch import library_path

HERE = Path(__file__).parent
PROGRAMS = HERE / "programs"
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


def unavailable(why: str) -> None:
    if os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1":
        pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}")
    pytest.skip(why)


def need(tool: str, package: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        unavailable(f"{tool} not found (apt-get install {package})")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def preload() -> Path:
    lib = library_path()
    if lib is None:
        unavailable("the preload library was not built (pip install -e . with gcc present)")
    assert lib is not None
    return lib


@pytest.fixture(scope="module")
def board(preload: Path) -> Iterator[Running]:
    running, t = start_server_thread(load_board(None))
    try:
        yield running
    finally:
        stop_server_thread(running, t)


def run(board: Running, *command: str, opts: tuple[str, ...] = (), timeout: float = 120,
        env: dict[str, str] | None = None, cwd: Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """``busbridge --connect URL run [opts] -- command``; PATH gets /usr/sbin (i2c-tools)."""
    e = dict(os.environ if env is None else env)
    e["PATH"] = e.get("PATH", "") + ":/usr/sbin:/sbin"
    return subprocess.run([*BUSBRIDGE, "--connect", board.url, "run", *opts, "--", *command],
                          capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd,
                          stdin=subprocess.DEVNULL, check=False)


def compile_c(source: Path, out: Path, *flags: str) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        unavailable("no C compiler (apt-get install gcc libc6-dev linux-libc-dev)")
    assert gcc is not None
    r = subprocess.run([gcc, "-O2", "-Wall", "-o", str(out), str(source), *flags],
                       capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        if "-static" in flags and "cannot find -lc" in r.stderr:
            unavailable("no static libc (apt-get install libc6-dev)")
        pytest.fail(f"compiling {source.name} failed:\n{r.stderr}")
    return out
