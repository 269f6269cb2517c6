"""The image, built from the unmodified Dockerfile and run by a real Docker engine.

What a user of the image meets: the Dockerfile's own example, the health check on
a board with tokens and on another port, the non-root user, and a container
locked down with --read-only --cap-drop ALL --security-opt no-new-privileges.
Ports are published on 127.0.0.1 only; the host side is the project's own CLI.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from .engine import BUSBRIDGE, REPO, Engine, free_port

pytestmark = pytest.mark.slow

LOCKED_DOWN = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def host_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUSBRIDGE, *args], capture_output=True, text=True, timeout=timeout)


def dockerfile_example() -> list[str]:
    """The Dockerfile's own `docker run ... # simulated board` line, as words."""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("#   docker run") and "simulated board" in line:
            return shlex.split(line.lstrip("# ").split("#")[0])
    raise AssertionError("the Dockerfile shows no simulated-board example")


def test_the_dockerfiles_example_serves_the_simulated_board_on_loopback(
        engine: Engine, image: str) -> None:
    """Issue 17 item 1: the example exited 2 (no authentication on 0.0.0.0)."""
    words = dockerfile_example()
    assert words[:2] == ["docker", "run"]
    port = free_port()
    options, args = [], []
    it = iter(words[2:])
    for w in it:  # the example's options, with a free host port and a labelled container
        if w == "busbridge":
            args = list(it)
            break
        if w == "--rm":
            continue
        if w == "-p":
            mapping = next(it)
            assert mapping.startswith("127.0.0.1:"), "the example publishes beyond loopback"
            options += ["-p", f"127.0.0.1:{port}:{mapping.rsplit(':', 1)[1]}"]
            continue
        options.append(w)
    name = engine.container(image, *args, options=options)
    t = engine.wait_healthy(name)
    engine.figures["time to healthy s (the Dockerfile's example)"] = round(t, 1)
    assert engine.published(name, "7707/tcp") == [("127.0.0.1", port)]
    info = host_cli("--connect", f"127.0.0.1:{port}", "info")
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith("board:   busbridge-sim\n")
    got = host_cli("--connect", f"127.0.0.1:{port}", "i2c", "get", "-y", "1", "0x48", "0x0f",
                   "w")
    assert (got.returncode, got.stdout) == (0, "0x1701\n"), got.stderr


def test_locked_down_container_runs_as_uid_10001_and_serves(engine: Engine,
                                                            image: str) -> None:
    port = free_port()
    name = engine.container(image, "--insecure",
                            options=[*LOCKED_DOWN, "-p", f"127.0.0.1:{port}:7707"])
    t = engine.wait_healthy(name)
    engine.figures["time to healthy s (locked down)"] = round(t, 1)
    ids = engine.run("exec", name, "id").stdout
    assert re.match(r"uid=10001\(busbridge\) gid=65534\(nogroup\) groups=65534\(nogroup\),"
                    r"998\(i2c\),999\(spi\)", ids), ids
    caps = engine.run("exec", name, "grep", "^CapEff", "/proc/self/status").stdout
    assert caps.split()[1] == "0000000000000000"
    assert "NoNewPrivs:\t1" in engine.run("exec", name, "cat", "/proc/self/status").stdout
    touch = engine.run("exec", name, "touch", "/opt/busbridge/x", check=False)
    assert touch.returncode != 0
    assert "Read-only file system" in touch.stderr
    inside = engine.run("exec", name, "busbridge", "--connect", "127.0.0.1:7707", "i2c", "get",
                        "-y", "1", "0x48", "0x0f", "w").stdout
    assert inside == "0x1701\n"
    outside = host_cli("--connect", f"127.0.0.1:{port}", "info", "--json")
    assert outside.returncode == 0, outside.stderr
    lib = engine.run("exec", name, "python", "-c", "from bridge.native.launch import "
                     "library_path; print(library_path())").stdout.strip()
    assert lib.endswith("libbusbridge_preload.so")  # run can serve native programs here
    t0 = time.monotonic()
    engine.run("stop", name)
    engine.figures["docker stop s"] = round(time.monotonic() - t0, 2)
    state = engine.inspect("container", name)["State"]
    assert state["ExitCode"] == 0  # SIGTERM: in-flight answered, then a clean exit
    logs = engine.run("logs", name).stderr
    assert "busbridge: serving board 'busbridge-sim' on 0.0.0.0:7707" in logs


def test_healthy_with_tokens_and_on_another_port(engine: Engine, image: str,
                                                 tmp_path: Path) -> None:
    """Issue 17 item 2: a board with [[server.tokens]] stayed unhealthy for ever, and the
    check looked at 7707 whatever the server listened on."""
    token = tmp_path / "ci.token"
    made = host_cli("token", "new", "--name", "ci", "--token-file", str(token))
    assert made.returncode == 0, made.stderr
    snippet = made.stderr[made.stderr.index("[[server.tokens]]"):]
    board = tmp_path / "board.toml"
    board.write_text(f'name = "lab-token-1"\n[server]\nlisten = "0.0.0.0:7707"\n{snippet}\n'
                     '[[i2c]]\nname = "1"\nbackend = "sim"\n')
    board.chmod(0o644)
    port = free_port()
    name = engine.container(image, "--config", "/etc/busbridge/board.toml", options=[
        *LOCKED_DOWN, "-e", "BUSBRIDGE_LISTEN=0.0.0.0:9000", "-p", f"127.0.0.1:{port}:9000",
        "-v", f"{board}:/etc/busbridge/board.toml:ro"])
    engine.wait_healthy(name)
    checks = engine.inspect("container", name)["State"]["Health"]["Log"]
    assert "refused this check: unauthorized: this server requires a token" in \
        checks[-1]["Output"]
    assert "127.0.0.1:9000" in checks[-1]["Output"]
    denied = host_cli("--connect", f"127.0.0.1:{port}", "info")
    assert denied.returncode == 1
    assert "refused the connection: this server requires a token" in denied.stderr
    ok = host_cli("--connect", f"127.0.0.1:{port}", "--token-file", str(token), "info")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("board:   lab-token-1\n")
