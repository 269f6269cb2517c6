"""``busbridge lease ...`` and ``busbridge run --lease``: real subprocesses, real TCP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import Running

from bridge.client import Client, RemoteError, write
from protocol import ErrorCode

BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


def env_without_lease() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BUSBRIDGE_LEASE", None)
    env.pop("BUSBRIDGE_HOLDER", None)
    return env


def bb(running: Running, *args: str, env: dict[str, str] | None = None,
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUSBRIDGE, "--connect", running.url, *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env=env if env is not None else env_without_lease())


def spawn(running: Running, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*BUSBRIDGE, "--connect", running.url, *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env_without_lease())


def wait_for(path: Path, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} did not appear in {seconds} s"
        time.sleep(0.05)


def test_take_list_use_renew_release_from_the_shell(server_thread: Running) -> None:
    took = bb(server_thread, "lease", "take", "i2c:1@0x48", "--ttl", "120", "--json",
              "--holder", "ci job 42")
    assert took.returncode == 0, took.stderr
    out = json.loads(took.stdout)
    token, lease_id = out["token"], out["lease"]["id"]
    assert token not in took.stderr  # only stdout carries the secret
    assert (f'took lease {lease_id} on i2c bus 1 address 0x48 held by "ci job 42" '
            "(anonymous)") in took.stderr

    listed = bb(server_thread, "lease", "list")
    assert lease_id in listed.stdout
    assert "ci job 42" in listed.stdout
    assert token not in listed.stdout

    denied = bb(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", "w")
    assert denied.returncode == 1
    assert 'busy: i2c bus 1 address 0x48 held by "ci job 42" (anonymous) until' in denied.stderr
    assert f"(lease {lease_id})" in denied.stderr

    holder_env = {**env_without_lease(), "BUSBRIDGE_LEASE": token}
    ok = bb(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", "w", env=holder_env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "0x1701"

    renewed = bb(server_thread, "lease", "renew", "--ttl", "300", env=holder_env)
    assert renewed.returncode == 0, renewed.stderr
    assert f"renewed lease {lease_id}" in renewed.stdout
    assert "(300 s left)" in renewed.stdout or "(299 s left)" in renewed.stdout

    released = bb(server_thread, "lease", "release", env=holder_env)
    assert released.stdout.strip() == "token 1: released"
    again = bb(server_thread, "lease", "release", token)
    assert again.returncode == 0
    assert "already gone" in again.stdout
    assert bb(server_thread, "lease", "list", "--json").stdout.strip() == "[]"
    gone = bb(server_thread, "lease", "renew", token)
    assert gone.returncode == 1
    assert "no live lease for this token" in gone.stderr


def test_take_export_is_eval_able_and_adds_to_the_current_tokens(server_thread: Running
                                                                 ) -> None:
    first = bb(server_thread, "lease", "take", "spi:0@1", "--ttl", "60")
    token1 = first.stdout.strip()
    env = {**env_without_lease(), "BUSBRIDGE_LEASE": token1}
    second = bb(server_thread, "lease", "take", "i2c:2", "--export", env=env)
    assert second.returncode == 0, second.stderr
    line = second.stdout.strip()
    assert line.startswith("export BUSBRIDGE_LEASE=")
    shell = subprocess.run(["sh", "-c", f'{line}; printf %s "$BUSBRIDGE_LEASE"'],
                           capture_output=True, text=True, timeout=10, check=True)
    tokens = shell.stdout.split(",")
    assert tokens[0] == token1
    assert len(tokens) == 2
    # Both leases are held, and the exported value lets a later step use both.
    both = {**env_without_lease(), "BUSBRIDGE_LEASE": shell.stdout}
    assert bb(server_thread, "i2c", "detect", "-y", "2", env=both).returncode == 0
    assert bb(server_thread, "i2c", "detect", "-y", "2").returncode == 1


def test_bad_scopes_and_tokens_are_usage_errors(server_thread: Running) -> None:
    bad = bb(server_thread, "lease", "take", "gpio:3")
    assert bad.returncode == 2
    assert "expected i2c:BUS[@ADDRESS] or spi:BUS[@CS]" in bad.stderr
    nobus = bb(server_thread, "lease", "take", "i2c:9")
    assert nobus.returncode == 1
    assert "no I2C bus '9'" in nobus.stderr
    env = {**env_without_lease(), "BUSBRIDGE_LEASE": "oops"}
    garbled = bb(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", env=env)
    assert garbled.returncode == 1
    assert "BUSBRIDGE_LEASE: entry 1 is not a lease token" in garbled.stderr
    assert bb(server_thread, "lease", "release").returncode == 2  # no token anywhere


CHILD = """\
import json, os
import smbus2
from bridge.client import Client, RemoteError, parse_address, write

ident = smbus2.SMBus(1).read_word_data(0x48, 0x0f)   # the drop-in presents $BUSBRIDGE_LEASE
host, port = parse_address(os.environ["BUSBRIDGE_URL"])
with Client(host, port) as other:                     # no token: refused
    try:
        other.i2c("1", [write(0x48)])
        outsider = "passed"
    except RemoteError as e:
        outsider = e.message
print(json.dumps({"ident": ident, "outsider": outsider,
                  "tokens": len(os.environ["BUSBRIDGE_LEASE"].split(","))}))
"""


def test_run_lease_passes_the_token_to_the_child_and_releases_at_exit(
        server_thread: Running, tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    out = subprocess.run([*BUSBRIDGE, "--connect", server_thread.url, "run", "--lease", "i2c:1",
                          "--holder", "nightly", "--", sys.executable, "child.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                         env=env_without_lease())
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["ident"] == 0x1701  # the child's drop-in smbus2 passed with the env token
    assert got["outsider"].startswith('busy: i2c bus 1 held by "nightly" (anonymous) until ')
    assert got["tokens"] == 1
    assert "holding lease" in out.stderr
    with Client(server_thread.host, server_thread.port) as c:
        assert c.leases() == []  # released at exit
        assert c.i2c("1", [write(0x48)]).status == b"\x00"


def test_run_lease_names_the_users_command_as_holder(server_thread: Running) -> None:
    """Others' busy errors show the command that holds the bus, not busbridge's wrapper."""
    program = ("import os, json; from bridge.client import Client, parse_address; "
               "c = Client(*parse_address(os.environ['BUSBRIDGE_URL'])); "
               "print(json.dumps([x.holder for x in c.leases()]))")
    out = subprocess.run([*BUSBRIDGE, "--connect", server_thread.url, "run", "--lease",
                          "i2c:1", "--", sys.executable, "-c", program],
                         capture_output=True, text=True, timeout=60, check=False,
                         env=env_without_lease())
    assert out.returncode == 0, out.stderr
    (holder,) = json.loads(out.stdout)
    assert f": {sys.executable} -c " in holder
    assert "bridge.native.launch" not in holder


def test_run_lease_fails_at_once_when_busy_and_without_wait(server_thread: Running,
                                                             tmp_path: Path) -> None:
    with Client(server_thread.host, server_thread.port, name="holder") as c:
        c.lease_take(1, 0x50, ttl=60, holder="the flash job")
        out = bb(server_thread, "run", "--lease", "i2c:1", "--", sys.executable, "-c",
                 "open('ran', 'w')")
    assert out.returncode == 1
    assert 'busy: i2c bus 1 address 0x50 held by "the flash job" (anonymous) until' in out.stderr
    assert not (tmp_path / "ran").exists()


def test_run_lease_blocks_a_second_run_until_the_first_command_exits(
        server_thread: Running, tmp_path: Path) -> None:
    started1, go, started2 = tmp_path / "started1", tmp_path / "go", tmp_path / "started2"
    first = spawn(server_thread, "run", "--lease", "i2c:1@0x50", "--lease-ttl", "30",
                  "--holder", "job 1", "--", sys.executable, "-c",
                  f"import os, time, pathlib\n"
                  f"pathlib.Path({str(started1)!r}).touch()\n"
                  f"end = time.monotonic() + 30\n"
                  f"while not os.path.exists({str(go)!r}) and time.monotonic() < end:\n"
                  f"    time.sleep(0.05)\n")
    second: subprocess.Popen[str] | None = None
    try:
        wait_for(started1)
        second = spawn(server_thread, "run", "--lease", "i2c:1@0x50", "--lease-wait", "40",
                       "--holder", "job 2", "--", sys.executable, "-c",
                       f"import time, pathlib; pathlib.Path({str(started2)!r}).write_text("
                       f"repr(time.time()))")
        # Until the second job says it waits (its start-up may take seconds on a busy
        # machine: a fixed sleep let the first job end before the second asked).
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(second.stderr or ()), daemon=True)
        reader.start()
        waiting = 'waiting up to 40 s: busy: i2c bus 1 address 0x50 held by "job 1"'
        end = time.monotonic() + 60
        while not any(waiting in line for line in lines):
            assert time.monotonic() < end, f"the second job never said it waits: {lines}"
            assert second.poll() is None, f"the second job ended without waiting: {lines}"
            time.sleep(0.05)
        assert not started2.exists(), "the second job ran while the first held the lease"
        t_go = time.time()
        go.touch()
        assert first.wait(30) == 0
        assert second.wait(30) == 0
        reader.join(10)
        assert float(started2.read_text()) > t_go
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
            if p is not None:
                p.communicate(timeout=10)


def test_sigterm_stops_the_command_and_releases_the_lease(server_thread: Running,
                                                          tmp_path: Path) -> None:
    started = tmp_path / "started"
    p = spawn(server_thread, "run", "--lease", "spi:0", "--lease-ttl", "600", "--",
              sys.executable, "-c",
              f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(60)")
    try:
        wait_for(started)
        with Client(server_thread.host, server_thread.port) as c:
            assert [x.scope for x in c.leases()] == ["spi bus 0"]
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 128 + signal.SIGTERM
            assert c.leases() == []  # released, long before its 600 s TTL
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def test_a_renewing_run_outlives_its_ttl(server_thread: Running) -> None:
    """With a 1 s TTL the lease survives a 2.5 s command only because it is renewed."""
    out = bb(server_thread, "run", "--lease", "i2c:2", "--lease-ttl", "1", "--",
             sys.executable, "-c",
             "import time, os\n"
             "from bridge.client import Client, RemoteError, parse_address, write\n"
             "time.sleep(2.5)\n"
             "h, p = parse_address(os.environ['BUSBRIDGE_URL'])\n"
             "with Client(h, p) as c:\n"
             "    try:\n"
             "        c.i2c('2', [write(0x18)])\n"
             "        print('free')\n"
             "    except RemoteError as e:\n"
             "        print(e.code)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(ErrorCode.BUSY)


@pytest.mark.parametrize("scope", ["i2c:1@0x50", "spi:0@1", "i2c:bus-a@80", "spi:0"])
def test_scope_syntax_round_trips(scope: str) -> None:
    from bridge.cli.lease import Scope

    sc = Scope.parse(scope)
    assert Scope.parse(str(sc)) == sc
    assert (sc.address if sc.kind == "i2c" else sc.cs) in (None, 0x50, 1)


def test_remote_error_text_is_not_doubled() -> None:
    e = RemoteError(ErrorCode.BUSY, "busy: i2c bus 1 held by x until t (lease y)")
    assert str(e) == "busy: i2c bus 1 held by x until t (lease y)"


def test_the_board_files_lease_max_ttl_bounds_takes(tmp_path: Path) -> None:
    board = tmp_path / "board.toml"
    board.write_text('name = "capped"\n[server]\nlease_max_ttl_s = 10\n'
                     '[[i2c]]\nname = "1"\nbackend = "sim"\n')
    srv = subprocess.Popen([*BUSBRIDGE, "serve", "--config", str(board), "--listen",
                            "127.0.0.1:0"], text=True, stderr=subprocess.PIPE,
                           env=env_without_lease())
    try:
        assert srv.stderr is not None
        line = srv.stderr.readline()
        m = re.search(r"on (127\.0\.0\.1:\d+)", line)
        assert m is not None, line
        url = m.group(1)
        too_long = subprocess.run([*BUSBRIDGE, "--connect", url, "lease", "take", "i2c:1",
                                   "--ttl", "11"], capture_output=True, text=True, timeout=30,
                                  check=False, env=env_without_lease())
        assert too_long.returncode == 1
        assert "lease ttl 11 s exceeds this server's maximum of 10 s" in too_long.stderr
        ok = subprocess.run([*BUSBRIDGE, "--connect", url, "lease", "take", "i2c:1",
                             "--ttl", "10"], capture_output=True, text=True, timeout=30,
                            check=False, env=env_without_lease())
        assert ok.returncode == 0, ok.stderr
    finally:
        srv.terminate()
        srv.communicate(timeout=20)


def test_sigterm_while_waiting_releases_what_was_taken(server_thread: Running,
                                                       tmp_path: Path) -> None:
    with Client(server_thread.host, server_thread.port) as c:
        mine = c.lease_take(1, ttl=60, holder="the test")
        p = spawn(server_thread, "run", "--lease", "i2c:2", "--lease", "i2c:1",
                  "--lease-wait", "60", "--", sys.executable, "-c",
                  f"open({str(tmp_path / 'ran')!r}, 'w')")
        try:
            assert p.stderr is not None
            line = p.stderr.readline()
            assert 'waiting up to 60 s: busy: i2c bus 1 held by "the test"' in line
            assert sorted(x.scope for x in c.leases()) == ["i2c bus 1", "i2c bus 2"]
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 128 + signal.SIGTERM
            assert [x.id for x in c.leases()] == [mine.id]  # i2c:2 given back at once
            assert not (tmp_path / "ran").exists()
        finally:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)


def test_lease_tokens_are_safe_command_line_arguments() -> None:
    # A token beginning with "-" made `busbridge lease release TOKEN` read it as an
    # option (seen once in CI): tokens are hex.
    from bridge.server.auth import new_token
    from bridge.server.leases import LeaseTable

    table = LeaseTable()
    tokens = [table.take("i2c", str(i), ttl=60, holder="t").token for i in range(200)]
    tokens += [new_token() for _ in range(200)]
    assert all(t[0] not in "-_" and all(c in "0123456789abcdef" for c in t) for t in tokens)
