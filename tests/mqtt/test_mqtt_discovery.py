"""Finding a board by name through a real Mosquitto, from every client front end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge import dropin
from bridge.cli.main import cli
from bridge.cli.vhost import vhost_user
from bridge.client import Client, read, write
from bridge.mqtt.discovery import (
    DiscoveryError,
    connect_board,
    connect_board_sync,
    resolve,
    snapshot,
)
from bridge.mqtt.presence import Presence
from bridge.server import Server

from .conftest import Mosquitto, ThreadBoard, announced_board_thread

BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


async def test_second_client_finds_the_board_by_name_and_reads_a_register(
        announced: tuple[Server, Presence], mosquitto: Mosquitto) -> None:
    server, _ = announced
    assert await resolve("busbridge-sim", mosquitto.url) == ("127.0.0.1", server.port)
    async with await connect_board("busbridge-sim", mosquitto.url) as c:
        (data,) = await c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
    assert data == b"\x01\x17"  # TMP117 device-ID register, through the resolved address


async def test_unknown_board_names_the_boards_online(
        announced: tuple[Server, Presence], mosquitto: Mosquitto) -> None:
    with pytest.raises(DiscoveryError) as e:
        await resolve("lab-pi-9", mosquitto.url)
    assert e.value.strerror == (f"no board named 'lab-pi-9' on the MQTT broker at "
                                f"{mosquitto.url}; online boards: busbridge-sim")


async def test_offline_board_is_a_clear_error_with_last_seen(
        announced: tuple[Server, Presence], mosquitto: Mosquitto) -> None:
    _, presence = announced
    await presence.stop()
    with pytest.raises(DiscoveryError) as e:
        await resolve("busbridge-sim", mosquitto.url)
    msg = e.value.strerror or ""
    assert msg.startswith("board 'busbridge-sim' is offline (last seen 20")
    assert msg.endswith("; shutdown)")
    with pytest.raises(OSError, match="is offline"):
        await connect_board("busbridge-sim", mosquitto.url)


async def test_no_broker_is_a_clear_error(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    with pytest.raises(DiscoveryError, match=f"cannot reach the MQTT broker at {mosquitto.url}"):
        await snapshot(mosquitto.url, timeout=2)


def test_sync_client_from_board(board_thread: ThreadBoard, mosquitto: Mosquitto) -> None:
    with connect_board_sync(board_thread.name, mosquitto.url) as c:
        assert c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)]) == [b"\x01\x17"]


def test_cli_board_option_and_env(board_thread: ThreadBoard, mosquitto: Mosquitto) -> None:
    r = CliRunner().invoke(cli, ["--broker", mosquitto.url, "--board", board_thread.name,
                                 "i2c", "get", "-y", "1", "0x48", "0x0f", "w"])
    assert r.exit_code == 0, r.output
    assert r.output == "0x1701\n"
    env = {"BUSBRIDGE_BROKER": mosquitto.url, "BUSBRIDGE_BOARD": board_thread.name,
           "BUSBRIDGE_URL": "127.0.0.1:1"}  # the board wins over a URL from the environment
    r = CliRunner().invoke(cli, ["info", "--json"], env=env)
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["board"] == board_thread.name
    assert info["url"] == f"127.0.0.1:{board_thread.server.port}"
    assert info["found_as"] == {"board": board_thread.name, "broker": mosquitto.url}
    # The same options after the subcommand (issue 17 item 11), text output with one note.
    r = CliRunner().invoke(cli, ["info", "--broker", mosquitto.url, "--board",
                                 board_thread.name])
    assert r.exit_code == 0, r.output
    assert (f"at 127.0.0.1:{board_thread.server.port} (protocol 1; found by name "
            f"{board_thread.name!r} on the MQTT broker)\n") in r.output
    # ...but --connect on the command line beats BUSBRIDGE_BOARD from the environment.
    r = CliRunner().invoke(cli, ["--connect", "127.0.0.1:1", "info"], env=env)
    assert r.exit_code == 1
    assert "cannot connect to 127.0.0.1:1" in r.output


def test_cli_unknown_board_and_both_targets(board_thread: ThreadBoard,
                                            mosquitto: Mosquitto) -> None:
    r = CliRunner().invoke(cli, ["--broker", mosquitto.url, "--board", "nope", "info"])
    assert r.exit_code == 1
    assert r.output.strip() == (f"busbridge: error: no board named 'nope' on the MQTT broker at "
                                f"{mosquitto.url}; online boards: {board_thread.name}")
    r = CliRunner().invoke(cli, ["--connect", "x:1", "--board", "nope", "info"])
    assert r.exit_code == 2
    assert "not both" in r.output


def test_busbridge_boards_table_and_json(board_thread: ThreadBoard,
                                         mosquitto: Mosquitto) -> None:
    port = board_thread.server.port
    with Client("127.0.0.1", port) as c:
        c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
    r = CliRunner().invoke(cli, ["--broker", mosquitto.url, "boards"])
    assert r.exit_code == 0, r.output
    header, row = r.output.splitlines()
    assert header.split() == ["BOARD", "STATE", "ADDRESS", "I2C", "SPI", "UPTIME", "REQUESTS",
                              "ERRORS", "LAST", "SEEN"]
    cells = row.split()
    assert cells[:5] == [board_thread.name, "online", f"127.0.0.1:{port}", "1,2", "0"]
    r = CliRunner().invoke(cli, ["boards", "--json", "--broker", mosquitto.url])
    assert r.exit_code == 0, r.output
    (entry,) = json.loads(r.output)
    assert entry["name"] == board_thread.name
    assert entry["online"] is True
    assert entry["address"] == f"127.0.0.1:{port}"
    assert entry["buses"] == {"i2c": ["1", "2"], "spi": ["0"]}
    assert entry["inventory"]["i2c"][0]["name"] == "1"
    assert entry["health"]["board"] == board_thread.name


def test_boards_hides_offline_unless_all(mosquitto: Mosquitto, board_thread: ThreadBoard
                                         ) -> None:
    import asyncio

    asyncio.run_coroutine_threadsafe(board_thread.presence.stop(), board_thread.loop).result(5)
    r = CliRunner().invoke(cli, ["--broker", mosquitto.url, "boards"])
    assert r.exit_code == 0
    assert board_thread.name not in r.output
    assert "no boards online" in r.output
    r = CliRunner().invoke(cli, ["--broker", mosquitto.url, "boards", "--all"])
    assert r.output.splitlines()[1].split()[:2] == [board_thread.name, "offline"]


def test_busbridge_run_board(board_thread: ThreadBoard, mosquitto: Mosquitto,
                             tmp_path: Path) -> None:
    code = ("import smbus2; b = smbus2.SMBus(1); "
            "print(hex(b.read_word_data(0x48, 0x0f)))")
    out = subprocess.run([*BUSBRIDGE, "--broker", mosquitto.url, "run", "--board",
                          board_thread.name, "--", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "0x1701\n"  # SMBus word: little-endian, as i2cget shows it
    out = subprocess.run([*BUSBRIDGE, "run", "--board", "nope", "--broker", mosquitto.url,
                          "--", sys.executable, "-c", "pass"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1
    assert "no board named 'nope'" in out.stderr


def test_dropin_reads_board_from_environment(board_thread: ThreadBoard, mosquitto: Mosquitto,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUSBRIDGE_URL", raising=False)
    monkeypatch.setenv("BUSBRIDGE_BOARD", board_thread.name)
    monkeypatch.setenv("BUSBRIDGE_BROKER", mosquitto.url)
    dropin.disconnect()
    try:
        with dropin.SMBus(1) as bus:
            assert bus.read_word_data(0x48, 0x0F) == 0x1701
        monkeypatch.setenv("BUSBRIDGE_BOARD", "nope")
        dropin.disconnect()
        with pytest.raises(OSError, match="no board named 'nope'"):
            dropin.SMBus(1)
    finally:
        dropin.disconnect()


def test_dropin_finds_a_restarted_board_at_its_new_address(
        mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUSBRIDGE_URL", raising=False)
    monkeypatch.setenv("BUSBRIDGE_BROKER", mosquitto.url)
    dropin.disconnect()
    try:
        with announced_board_thread(mosquitto) as first:
            monkeypatch.setenv("BUSBRIDGE_BOARD", first.name)
            bus = dropin.SMBus(1)
            assert bus.read_word_data(0x48, 0x0F) == 0x1701
            old_port = first.server.port
        with socket.socket() as squatter:  # the old port stays taken: the board must move
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", old_port))
            with announced_board_thread(mosquitto) as second:
                assert second.server.port != old_port
                # The old connection is gone; the same SMBus object reconnects by name.
                assert bus.read_word_data(0x48, 0x0F) == 0x1701
                assert len(second.server.sessions) == 1  # the drop-in, on the new port
        bus.close()
    finally:
        dropin.disconnect()


def test_vhost_user_board(board_thread: ThreadBoard, mosquitto: Mosquitto,
                          tmp_path: Path) -> None:
    r = CliRunner().invoke(vhost_user, ["--socket", str(tmp_path / "s"), "--board", "nope",
                                        "--broker", mosquitto.url, "--bus", "1"])
    assert r.exit_code == 1
    assert f"no board named 'nope' on the MQTT broker at {mosquitto.url}; online boards: " \
           f"{board_thread.name}" in r.output
    # A known board is resolved and dialled: the agent then checks the bus on it.
    r = CliRunner().invoke(vhost_user, ["--socket", str(tmp_path / "s"), "--board",
                                        board_thread.name, "--broker", mosquitto.url,
                                        "--bus", "7"])
    assert r.exit_code == 1
    assert "the board has no I2C bus '7' (I2C buses: 1, 2)" in r.output


def test_without_the_mqtt_extra_board_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiomqtt", None)  # import aiomqtt -> ImportError
    r = CliRunner().invoke(cli, ["--board", "x", "info"])
    assert r.exit_code == 1
    assert "--board needs the MQTT client: pip install 'busbridge[mqtt]'" in r.output


def test_guest_commands_do_not_import_aiomqtt() -> None:
    code = ("import sys; from bridge.cli.main import cli; import bridge.dropin; "
            "print('aiomqtt' in sys.modules, 'paho' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


async def _announce(mosquitto: Mosquitto, board_name: str, advertise: str
                    ) -> tuple[Server, Presence]:
    from bridge.config import load_board

    from .conftest import fast_settings, wait_for

    board = load_board(None)
    board.name = board_name
    server = Server(board, host="127.0.0.1", port=0)
    await server.start()
    presence = Presence(server, fast_settings(mosquitto.url, advertise=advertise.format(
        port=server.port)))
    presence.start()
    await wait_for(lambda: presence.connects >= 1, what="the board to announce itself")
    return server, presence


async def _cli(*args: str) -> tuple[int, str]:
    import asyncio

    r = await asyncio.to_thread(CliRunner().invoke, cli, list(args))
    return r.exit_code, r.output


async def test_a_board_on_two_networks_is_found_from_either(mosquitto: Mosquitto) -> None:
    """Issue 17 item 4: a compose board advertises its service name for the compose network
    and 127.0.0.1 for the host; from here only the second resolves, and is dialled."""
    server, presence = await _announce(mosquitto, "lab-two-nets",
                                       "board.invalid:{port},127.0.0.1:{port}")
    try:
        assert await resolve("lab-two-nets", mosquitto.url) == ("127.0.0.1", server.port)
        code, out = await _cli("--broker", mosquitto.url, "--board", "lab-two-nets", "info",
                               "--json")
        assert code == 0, out
        assert json.loads(out)["url"] == f"127.0.0.1:{server.port}"
        code, out = await _cli("boards", "--json", "--broker", mosquitto.url)
        (rec,) = [b for b in json.loads(out) if b["name"] == "lab-two-nets"]
        assert rec["addresses"] == [f"board.invalid:{server.port}", f"127.0.0.1:{server.port}"]
        assert rec["address"] == f"board.invalid:{server.port}"  # older clients: the first
    finally:
        await presence.stop()
        await server.close(grace=1.0)


async def test_a_board_address_that_fails_here_is_named(mosquitto: Mosquitto) -> None:
    server, presence = await _announce(mosquitto, "lab-elsewhere", "board.invalid:{port}")
    try:
        code, out = await _cli("--broker", mosquitto.url, "--board", "lab-elsewhere", "info")
        assert code == 1
        assert out.startswith(f"busbridge: error: cannot connect to board lab-elsewhere at "
                              f"board.invalid:{server.port} (its address on the broker): ")
    finally:
        await presence.stop()
        await server.close(grace=1.0)
    server, presence = await _announce(mosquitto, "lab-nowhere", "a.invalid:1,b.invalid:2")
    try:
        with pytest.raises(DiscoveryError, match=r"advertises a\.invalid:1, b\.invalid:2; "
                                                 r"none resolves here \(a\.invalid:1: "):
            await resolve("lab-nowhere", mosquitto.url)
    finally:
        await presence.stop()
        await server.close(grace=1.0)
