"""The deployment files (Dockerfile, deploy/): validated as far as a machine without Docker can.

No Docker engine runs here, so no image is built.  What is checked instead:
the compose file with docker-compose's own validator, the Dockerfile with
hadolint, the systemd unit with ``systemd-analyze``; every command line in them
is parsed by the real ``busbridge`` CLI; and the image's entrypoint, with the
compose service's arguments and config, is run as a process against a real
Mosquitto, its HEALTHCHECK command and the example CI job run against it.
A tool that is missing skips its test with the reason (fails in CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click
import pytest

from bridge.cli.main import cli
from bridge.config import load_board, load_board_config

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (the dev extra has it)")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "busbridge.service"
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        why = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1":
            pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}")
        pytest.skip(why)
    return path


def compose() -> dict[str, Any]:
    """The compose file as docker-compose reads it with no variables set (their defaults)."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), COMPOSE.read_text())
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def dockerfile_env(name: str) -> str:
    """The value an ``ENV`` line of the Dockerfile gives ``name``."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(rf"^ENV .*\b{name}=(\S+)", text, re.M)
    assert m, f"no ENV {name} in the Dockerfile"
    return m.group(1)


def dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of ENTRYPOINT, or of HEALTHCHECK's CMD."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.strip()
        if words.startswith(instruction + " "):
            m = re.search(r"(\[.*\])\s*$", words)
            assert m, f"{instruction} is not in exec (JSON) form: {line}"
            args = json.loads(m.group(1))
            assert isinstance(args, list)
            return [str(a) for a in args]
    raise AssertionError(f"no {instruction} in the Dockerfile")


def check_cli(argv: list[str]) -> click.Context:
    """Parse ``busbridge ARGS...`` with the real CLI (options, choices, subcommands)."""
    assert argv[0] == "busbridge", argv
    ctx = cli.make_context("busbridge", argv[1:])
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 8.1 needs it
        warnings.simplefilter("ignore", DeprecationWarning)
        words = [*ctx.protected_args, *ctx.args]
    name, cmd, rest = cli.resolve_command(ctx, words)
    assert cmd is not None, argv
    return cmd.make_context(name or "", rest, parent=ctx)


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The host file a service's volume puts at ``container_path``."""
    for vol in service.get("volumes", []):
        src, _, rest = vol.partition(":")
        if rest.split(":")[0] == container_path and src.startswith("."):
            return (DEPLOY / src).resolve()
    raise AssertionError(f"no volume provides {container_path}")


def test_compose_services_and_their_command_lines() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == {"mosquitto", "board", "ci-job"}
    board = services["board"]
    entry = dockerfile_json("ENTRYPOINT")
    serve = check_cli(entry + board["command"])
    config = serve.params["config_path"]
    board_cfg = load_board(host_path(board, config))  # the file the volume mounts
    assert board_cfg.mqtt is not None
    assert board_cfg.mqtt.broker.split(":")[0] == "mosquitto"  # the compose service
    # One address per network: the service name for the ci-job, loopback for the host.
    assert serve.params["advertise"] == "board:7707,127.0.0.1:7707"
    assert serve.params["listen"] is None  # the image's BUSBRIDGE_LISTEN, which health reads
    assert dockerfile_env("BUSBRIDGE_LISTEN") == "0.0.0.0:7707"
    assert "127.0.0.1:7707:7707" in board["ports"]
    assert host_path(services["mosquitto"], "/mosquitto/config/mosquitto.conf").is_file()
    job = services["ci-job"]
    run = check_cli(job["entrypoint"] + job["command"])
    assert run.params["conn_board"] == board_cfg.name  # `run --board`, its own option
    assert job["environment"]["BUSBRIDGE_BROKER"].split(":")[0] == "mosquitto"
    assert job["depends_on"]["board"]["condition"] == "service_healthy"
    assert check_cli(dockerfile_json("HEALTHCHECK")).info_name == "health"
    with pytest.raises(click.NoSuchOption):  # the checker does refuse a wrong option
        check_cli([*entry, "--configg", "x"])


def test_compose_publishes_every_port_on_loopback_only() -> None:
    """Issue 17 item 3: an unauthenticated board and an anonymous broker stay off the LAN."""
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_compose_comments_use_the_docker_compose_debian_packages() -> None:
    """Issue 17 item 6: Debian packages docker-compose 1.x, not the `docker compose` plugin."""
    commands = [line for line in COMPOSE.read_text().splitlines()
                if re.match(r"#\s+(docker|busbridge)", line)]
    assert commands
    assert not [c for c in commands if "docker compose " in c]


def test_deploy_board_says_how_it_may_listen_on_every_interface() -> None:
    """A server that refuses a non-loopback listen without authentication (issue 7's rule)
    must find tokens, TLS client auth or an explicit ``insecure`` in the deploy config."""
    cfg = load_board_config(DEPLOY / "board.toml")
    assert cfg.server.host == "0.0.0.0"
    server = cfg.server
    if "insecure" in type(server).model_fields:
        assert getattr(server, "insecure", False) or getattr(server, "tokens", None) or \
            getattr(server, "tls", None), "deploy/board.toml: add [server] insecure = true " \
            "(trusted lab network) or tokens"


def test_compose_file_validates_with_docker_compose() -> None:
    exe = _tool("docker-compose")
    out = subprocess.run([exe, "-f", str(COMPOSE), "--profile", "ci", "config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == {"mosquitto", "board", "ci-job"}


def test_dockerfile_lints_clean() -> None:
    exe = _tool("hadolint")
    out = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_runs_as_a_non_root_member_of_i2c_and_spi() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM .* AS build$", text, re.M), "multi-stage build"
    (user,) = re.findall(r"^USER (\S+)$", text, re.M)
    assert user not in ("0", "root")
    flat = text.replace("\\\n", "")
    assert re.search(rf'useradd .*--uid {user} .*--groups "\$\{{I2C_GID\}},\$\{{SPI_GID\}}"',
                     flat)
    assert re.search(r'groupadd --system --gid "\$\{I2C_GID\}" i2c', flat)
    assert re.search(r'groupadd --system --gid "\$\{SPI_GID\}" spi', flat)


def _unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this venv's busbridge (verify checks it exists)."""
    exe = shutil.which("busbridge", path=str(Path(sys.executable).parent))
    assert exe is not None
    unit = tmp_path / "busbridge.service"
    unit.write_text(UNIT.read_text().replace("/opt/busbridge/bin/busbridge", exe))
    return unit


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    exe = _tool("systemd-analyze")
    unit = _unit(tmp_path)
    out = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([exe, "security", "--offline=true", str(unit)], capture_output=True,
                         text=True, timeout=60)
    m = re.search(r"Overall exposure level for busbridge.service: ([\d.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0, out.stdout  # systemd rates <= 2 "OK"/"SAFE"
    text = UNIT.read_text()
    assert "SupplementaryGroups=i2c spi" in text
    # A descriptor per connection from accept on: the default limits must fit (issue 14).
    from bridge.server.server import SPARE_FDS
    from bridge.server.settings import LimitSettings

    nofile = int(re.search(r"^LimitNOFILE=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    lim = LimitSettings()
    assert nofile >= lim.max_clients + lim.max_pending + SPARE_FDS
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    ctx = check_cli(["busbridge", *exec_start.split()[1:]])
    assert ctx.params["config_path"] == "/etc/busbridge/board.toml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_image_entrypoint_healthcheck_and_ci_job_run(mosquitto: Any, tmp_path: Path) -> None:
    """The container's processes, run directly: loopback instead of 0.0.0.0, the test broker
    instead of the compose service name."""
    pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed")
    services = compose()["services"]
    board = services["board"]
    port = _free_port()
    argv = dockerfile_json("ENTRYPOINT") + board["command"]
    config = check_cli(argv).params["config_path"]
    argv = [a if a != config else str(host_path(board, config)) for a in argv]
    # Later options win: only the addresses change, the rest is the image's command line.
    argv += ["--listen", f"127.0.0.1:{port}", "--broker", mosquitto.url,
             "--advertise", f"127.0.0.1:{port}"]
    serve = subprocess.Popen([*BUSBRIDGE, *argv[1:]], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    env = {**os.environ, "BUSBRIDGE_BROKER": mosquitto.url}
    env.pop("BUSBRIDGE_URL", None)
    try:
        deadline = time.monotonic() + 15
        while True:
            boards = subprocess.run([*BUSBRIDGE, "boards", "--json"], env=env,
                                    capture_output=True, text=True, timeout=30)
            if boards.returncode == 0 and json.loads(boards.stdout or "[]"):
                break
            assert serve.poll() is None, serve.communicate()
            assert time.monotonic() < deadline, boards.stderr
            time.sleep(0.1)
        (entry,) = json.loads(boards.stdout)
        assert entry["name"] == "lab-sim-1"
        assert entry["address"] == f"127.0.0.1:{port}"

        # The image's HEALTHCHECK, as the engine runs it: the port from BUSBRIDGE_LISTEN.
        health = dockerfile_json("HEALTHCHECK")
        out = subprocess.run([*BUSBRIDGE, *health[1:]], capture_output=True, text=True,
                             timeout=30, env={**env, "BUSBRIDGE_LISTEN": f"127.0.0.1:{port}"})
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"healthy: 127.0.0.1:{port}: board 'lab-sim-1', ")

        job = services["ci-job"]
        command = [sys.executable if a == "python" else a for a in job["command"]]
        out = subprocess.run([*BUSBRIDGE, *job["entrypoint"][1:], *command],
                             env=env, capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "device id ok: 0x1701\n"
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=20)
    assert serve.returncode == 0, err
    assert f"announcing 'lab-sim-1' as 127.0.0.1:{port} on MQTT broker {mosquitto.url}" in err
