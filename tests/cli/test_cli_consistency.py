"""The rough edges a newcomer hit (issue 17 items 2, 8, 11, 13, 14): options in either
place, one error style, pure JSON logs, a health check, and the small lies in --help.

A real server on a thread (``server_thread``), real subprocesses where the point is
what a terminal or a log collector receives.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest
from click.testing import Result
from conftest import cli_runner

from bridge import env
from bridge.cli.main import cli

if TYPE_CHECKING:
    from conftest import Running

ROOT = Path(__file__).resolve().parents[2]
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


pytestmark = pytest.mark.usefixtures("restore_busbridge_logging")


def invoke(*args: str, env_: dict[str, str | None] | None = None) -> Result:
    runner = cli_runner()
    base: dict[str, str | None] = {env.URL: None, env.BOARD: None, env.LISTEN: None,
                                   env.TLS: None, env.TLS_CA: None, env.TOKEN: None,
                                   env.TOKEN_FILE: None}
    return runner.invoke(cli, list(args), env={**base, **(env_ or {})})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("BUSBRIDGE_")}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


# ---------------------------------------------------------------------------
# item 11: connection options before or after the subcommand, for every command
# ---------------------------------------------------------------------------

#: Every command that talks to a server (or, for boards, to the broker), with arguments
#: that make it connect at once.
CONNECTING = {
    "info": ["info"],
    "health": ["health"],
    "i2c detect": ["i2c", "detect", "-y", "1"],
    "i2c get": ["i2c", "get", "-y", "1", "0x48", "0x0f", "w"],
    "i2c set": ["i2c", "set", "-y", "1", "0x48", "0x02", "0x00"],
    "i2c transfer": ["i2c", "transfer", "-y", "1", "w1@0x48", "0x0f", "r2"],
    "spi transfer": ["spi", "transfer", "0", "0", "9f000000"],
    "lease take": ["lease", "take", "i2c:1"],
    "lease renew": ["lease", "renew", "x" * 32],
    "lease release": ["lease", "release", "x" * 32],
    "lease list": ["lease", "list"],
    "run": ["run", "--no-native", "--", sys.executable, "-c", "pass"],
    "vhost-user": ["vhost-user", "--socket", "{tmp}/vu.sock", "--bus", "1"],
    "conformance": ["conformance", "-k", "vec.ping"],
    "sim devices": ["sim", "devices"],
    "sim get": ["sim", "get", "1", "0x48"],
    "sim set": ["sim", "set", "1", "0x48", "temperature=20"],
    "sim fault": ["sim", "fault", "1", "0x50", "clear"],
    "sim log": ["sim", "log", "1"],
    "sim screenshot": ["sim", "screenshot", "1", "0x3c", "{tmp}/oled.png"],
    "trace": ["trace", "--count", "1"],
}


def _leaves(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_every_command_that_connects_takes_the_connection_options() -> None:
    """The same ten options, hidden in each command's help, which says where they go."""
    names = {"--connect", "--board", "--broker", "--timeout", "--tls", "--tls-ca", "--tls-cert",
             "--tls-key", "--tls-server-name", "--token-file"}
    taking = set()
    for path, cmd in _leaves(cli):
        conn = [p for p in cmd.params if (p.name or "").startswith("conn_")]
        if conn:
            opts = {o for p in conn for o in p.opts}
            assert opts == names, (path, names ^ opts)
            assert all(getattr(p, "hidden", False) for p in conn), path
            assert "go before or after the command" in (cmd.help or ""), path
            taking.add(path)
    # serve listens (its --broker/--tls-cert are the board's own); token never connects.
    assert taking == set(CONNECTING) | {"mount", "boards"}


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("name", sorted(CONNECTING))
def test_connect_goes_before_or_after_the_command(name: str, where: str,
                                                  tmp_path: Path) -> None:
    port = closed_port()
    args = [a.replace("{tmp}", str(tmp_path)) for a in CONNECTING[name]]
    conn = ["--connect", f"127.0.0.1:{port}", "--timeout", "2"]
    if where == "before":
        r = invoke(*conn, *args)
    elif name == "run":  # `run`'s options end where COMMAND begins: before the --
        r = invoke("run", *conn, *args[1:])
    else:
        r = invoke(*args, *conn)
    out = r.stdout + r.stderr
    assert "No such option" not in out
    assert f"127.0.0.1:{port}" in out, out
    assert r.exit_code == 1, out


def test_an_option_after_the_command_wins_over_one_before(server_thread: Running) -> None:
    r = invoke("--connect", f"127.0.0.1:{closed_port()}", "i2c", "get", "-y", "1", "0x48",
               "0x0f", "w", "--connect", server_thread.url)
    assert (r.exit_code, r.stdout) == (0, "0x1701\n"), r.stderr
    r = invoke("info", "--tls", "--connect", server_thread.url)  # TLS options too
    assert r.exit_code == 1
    assert "does not speak TLS" in r.stderr
    r = invoke("info", "--token-file", "/nonexistent/token", "--connect", server_thread.url)
    assert r.exit_code == 2
    assert "cannot read token file /nonexistent/token" in r.stderr


def test_run_passes_options_after_its_command_to_the_command(server_thread: Running) -> None:
    """`busbridge run pytest --timeout 30`: --timeout belongs to pytest."""
    r = subprocess.run([*BUSBRIDGE, "run", "--no-native", "--connect", server_thread.url,
                        sys.executable, "-c", "import sys; print(sys.argv[1:])", "--timeout",
                        "30", "--connect", "x"], capture_output=True, text=True, timeout=60,
                       env=subprocess_env())
    assert (r.returncode, r.stdout.strip()) == (0, "['--timeout', '30', '--connect', 'x']"), \
        r.stderr


def test_vhost_user_says_what_it_serves_at_start_up(server_thread: Running,
                                                    tmp_path: Path) -> None:
    sock = tmp_path / "vi2c.sock"
    proc = subprocess.Popen([*BUSBRIDGE, "vhost-user", "--socket", str(sock), "--bus", "1",
                             "--connect", server_thread.url], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # one line, then it waits for QEMU
        assert line == (f"busbridge: vhost-user: virtio-i2c for i2c bus 1 of "
                        f"{server_thread.url}, on {sock}; start QEMU with -chardev "
                        f"socket,path={sock} -device vhost-user-i2c-pci\n")
        assert sock.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


# ---------------------------------------------------------------------------
# item 13: one error style; JSON logs that are JSON
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["i2c", "get", "-y", "1", "0x900", "0x00"],          # usage error
    ["info", "--connect", "127.0.0.1:{closed}"],         # cannot connect
    ["--board", "x", "--connect", "127.0.0.1:1", "info"],  # usage error in the group
    ["nosuchcommand"],                                   # click's own
    ["token", "hash", "--name", "x"],                    # no token on stdin
    ["serve", "--config", "/nonexistent/board.toml"],    # board file
])
def test_every_error_has_the_one_prefix(args: list[str]) -> None:
    args = [a.replace("{closed}", str(closed_port())) for a in args]
    r = invoke(*args)
    assert r.exit_code in (1, 2)
    errors = [x for x in r.stderr.splitlines() if x.startswith("busbridge: error: ")]
    assert len(errors) == 1, r.stderr
    assert r.stderr.startswith(("busbridge: error: ", "Usage: ")), r.stderr
    assert "Error:" not in r.stderr
    assert "Traceback" not in r.stderr


def test_log_json_is_pure_json_with_iso_timestamps() -> None:
    """Also: -vv logs each request when answered, and the stop line counts per bus."""
    proc = subprocess.Popen([*BUSBRIDGE, "--log-json", "-vv", "serve", "--listen",
                             "127.0.0.1:0"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stream = proc.stderr
    threading.Thread(target=lambda: [lines.put(x) for x in stream], daemon=True).start()
    records = []
    try:
        while not any(r.get("msg", "").startswith("serving board") for r in records):
            records.append(json.loads(lines.get(timeout=30)))
        listen = next(r["listen"] for r in records if "listen" in r and "board" in r)
        for args in (["info"], ["i2c", "get", "-y", "1", "0x48", "0x0f", "w"],
                     ["i2c", "get", "-y", "1\n\x1b[2J", "0x48", "0x0f", "w"]):
            subprocess.run([*BUSBRIDGE, "--log-json", "--connect", listen, *args],
                           capture_output=True, text=True, timeout=60, env=subprocess_env())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while not lines.empty():
        records.append(json.loads(lines.get()))  # every line parses: nothing plain
    assert all(ISO.fullmatch(r["ts"]) for r in records)
    msgs = [r["msg"] for r in records]
    assert any(m.startswith("serving board 'busbridge-sim' on 127.0.0.1:") for m in msgs)
    requests = [r for r in records if r["msg"] == "request"]
    assert [(r["bus"], r["what"], r["outcome"]) for r in requests] == [
        ("i2c:1", "w1@0x48 r2@0x48", "ok"),
        ("i2c:1\n\x1b[2J", "w1@0x48 r2@0x48",
         "unknown-bus: no I2C bus '1\\n\\x1b[2J' on board 'busbridge-sim' (I2C buses: '1', '2')")]
    assert all(r["level"] == "debug" and r["peer"].startswith("127.0.0.1:") for r in requests)
    (stopped,) = [r for r in records if r["msg"] == "stopped"]
    bus1 = stopped["by_bus"]["i2c:1"]
    assert bus1.pop("busy_s") >= 0
    assert bus1 == {"requests": 1, "errors": 0, "nacks": 0, "refused": 0, "timeouts": 0,
                    "bytes_read": 2, "bytes_written": 1}
    assert (stopped["requests"], stopped["refused"]) == (2, 1)  # the unknown bus: refused
    err = invoke("--log-json", "--connect", f"127.0.0.1:{closed_port()}", "info")
    (record,) = [json.loads(x) for x in err.stderr.splitlines()]
    assert (record["level"], record["exit_code"]) == ("error", 1)
    assert record["msg"].startswith("cannot connect to 127.0.0.1:")


def test_key_value_logs_escape_what_a_client_sent() -> None:
    from bridge.logs import LogfmtFormatter

    rec = logging.LogRecord("busbridge.server", logging.INFO, "", 0, "handshake", None, None)
    rec.fields = {"client": "evil\x1b[2J\nlevel=error", "bus": "1"}
    line = LogfmtFormatter().format(rec)
    assert "\n" not in line
    assert "\x1b" not in line
    # '=' is escaped inside a quoted value too, so `grep level=error` finds real errors only
    # (issue 14, finding 9).
    assert 'client="evil\\u001b[2J\\nlevel\\u003derror" bus=1' in line
    assert "level=error" not in line
    assert ISO.fullmatch(line.split()[0].removeprefix("ts="))


# ---------------------------------------------------------------------------
# items 8, 14 and the environment variables
# ---------------------------------------------------------------------------


def test_token_new_refuses_to_overwrite_a_token_file(tmp_path: Path) -> None:
    path = tmp_path / "ci.token"
    path.write_text("the token in use\n")
    r = invoke("token", "new", "--name", "ci", "--token-file", str(path))
    assert r.exit_code == 1
    assert r.stderr == (f"busbridge: error: {path} already exists: not overwritten (a token "
                        "in use may be in it); remove it first or choose another "
                        "--token-file\n")
    assert path.read_text() == "the token in use\n"


def test_i2c_detect_help_states_one_range() -> None:
    text = invoke("i2c", "detect", "-h").stdout
    assert "Scan every address, 0x00-0x7f (default 0x08-0x77)" in " ".join(text.split())
    assert "0x03-0x77" not in text


def test_bench_plot_without_matplotlib_fails_before_measuring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "figures.json"
    r = invoke("bench", "--quick", "--json", str(out), "--plot", str(tmp_path / "p.png"))
    assert r.exit_code == 1
    assert r.stderr == ("busbridge: error: --plot needs matplotlib: pip install "
                        "'busbridge[bench]' (nothing was measured)\n")
    assert not out.exists()


def test_every_environment_variable_of_the_cli_is_named_in_bridge_env() -> None:
    known = {getattr(env, name) for name in env.__all__}
    seen = set()
    for group in (cli, *(c for c in cli.commands.values() if isinstance(c, click.Group))):
        cmds = [group, *(group.commands.values() if isinstance(group, click.Group) else [])]
        for cmd in cmds:
            for p in cmd.params:
                for var in [p.envvar] if isinstance(p.envvar, str) else p.envvar or []:
                    assert var in known, (cmd.name, p.name, var)
                    seen.add(var)
    assert {env.URL, env.BOARD, env.BROKER, env.MAP, env.LISTEN} <= seen
    for source in (ROOT / "bridge" / "cli").glob("*.py"):
        assert not re.search(r'envvar="BUSBRIDGE_', source.read_text()), source


# ---------------------------------------------------------------------------
# item 2: a health check that works on a board with tokens, on any port
# ---------------------------------------------------------------------------


def test_health_is_ok_on_a_live_server_and_says_why_not_otherwise(
        server_thread: Running) -> None:
    r = invoke("health", "--connect", server_thread.url)
    server = server_thread.server.welcome.server
    assert (r.exit_code, r.stdout) == (0, f"healthy: {server_thread.url}: board "
                                          f"'busbridge-sim', {server}\n")
    port = closed_port()
    r = invoke("health", "--connect", f"127.0.0.1:{port}")
    assert r.exit_code == 1
    assert r.stderr.startswith(f"busbridge: error: unhealthy: cannot connect to 127.0.0.1:{port}")


def test_health_dials_the_port_serve_listens_on(server_thread: Running) -> None:
    r = invoke("health", "--quiet", env_={env.LISTEN: f"0.0.0.0:{server_thread.port}"})
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
