"""Brokers as labs secure them: TLS (trustme's throwaway CA), passwords, ACLs (real Mosquitto)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import Mosquitto, mosquitto_exe  # tests/conftest.py

from bridge.client import AsyncClient, read, write
from bridge.config import load_board
from bridge.mqtt.discovery import DiscoveryError, resolve
from bridge.mqtt.presence import Presence
from bridge.server import Server

from .conftest import fast_settings, wait_for

trustme = pytest.importorskip("trustme", reason="trustme is not installed (the dev extra has it)")


def password_file(where: Path, users: list[tuple[str, str]]) -> Path:
    """A Mosquitto password file made by mosquitto_passwd (salted hashes)."""
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd comes with the mosquitto package"
    passwd = where / "passwd"
    for i, (user, pw) in enumerate(users):
        subprocess.run([tool, "-b", *(["-c"] if i == 0 else []), str(passwd), user, pw],
                       check=True, capture_output=True, timeout=30)
    return passwd


@asynccontextmanager
async def board_announced(broker: Mosquitto, url: str,
                          **settings: Any) -> AsyncIterator[tuple[Server, Presence]]:
    """``broker`` started, the default board served on this loop and announcing itself to
    it at ``url`` (with ``settings``); all three stopped afterwards."""
    broker.start()
    server = Server(load_board(None), host="127.0.0.1", port=0)
    await server.start()
    presence = Presence(server, fast_settings(url, **settings))
    presence.start()
    try:
        yield server, presence
    finally:
        try:
            await presence.stop()
            await server.close()
        finally:
            broker.stop()


@pytest.fixture
def secure_broker(tmp_path: Path) -> tuple[Mosquitto, Path]:
    exe = mosquitto_exe()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_pem, cert_pem, key_pem = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    passwd = password_file(tmp_path, [("board", "b0ard-pw"), ("ci", "ci-pw")])
    broker = Mosquitto(exe, tmp_path, extra=f"cafile {ca_pem}\ncertfile {cert_pem}\n"
                       f"keyfile {key_pem}\npassword_file {passwd}\n")
    return broker, ca_pem


@pytest.fixture
async def tls_announced(secure_broker: tuple[Mosquitto, Path]
                        ) -> AsyncIterator[tuple[Server, Presence, Mosquitto, Path]]:
    broker, ca_pem = secure_broker
    async with board_announced(broker, f"mqtts://board:b0ard-pw@{broker.url}",
                               ca_file=str(ca_pem)) as (server, presence):
        yield server, presence, broker, ca_pem


async def test_announce_and_discover_over_tls_with_passwords(
        tls_announced: tuple[Server, Presence, Mosquitto, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, presence, broker, ca_pem = tls_announced
    await wait_for(lambda: presence.connects == 1, what="a TLS connection to the broker")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))  # clients trust the lab CA this way
    assert await resolve("busbridge-sim", f"mqtts://ci:ci-pw@{broker.url}") == (
        "127.0.0.1", server.port)
    with pytest.raises(DiscoveryError, match="cannot reach the MQTT broker"):
        await resolve("busbridge-sim", f"mqtts://ci:wrong@{broker.url}", timeout=3)
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", str(ca_pem.parent / "nothing"))
    with pytest.raises(DiscoveryError, match="cannot reach the MQTT broker"):
        # An untrusted certificate is refused, credentials or not.
        await resolve("busbridge-sim", f"mqtts://ci:ci-pw@{broker.url}", timeout=3)


async def test_wrong_board_password_keeps_retrying_without_touching_the_data_path(
        secure_broker: tuple[Mosquitto, Path]) -> None:
    broker, ca_pem = secure_broker
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    mqtt_log = logging.getLogger("busbridge.mqtt")
    mqtt_log.addHandler(handler)
    old_level = mqtt_log.level
    mqtt_log.setLevel(logging.DEBUG)
    try:
        async with board_announced(broker, f"mqtts://board:nope@{broker.url}",
                                   ca_file=str(ca_pem)) as (server, presence):
            await wait_for(
                lambda: sum("broker unreachable" in r.getMessage() for r in seen) >= 3,
                what="three refused connection attempts")
            refused = [r for r in seen if "broker unreachable" in r.getMessage()]
            assert "not authori" in refused[0].fields["error"].lower()  # type: ignore[attr-defined]
            async with await AsyncClient.connect(server.host, server.port) as c:
                (data,) = await c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
            assert data == b"\x01\x17"
            assert presence.connects == 0
    finally:
        mqtt_log.removeHandler(handler)
        mqtt_log.setLevel(old_level)


async def test_read_only_clients_under_an_acl_still_resolve(tmp_path: Path) -> None:
    """A lab ACL: boards write their own topics, CI users only read; the lookup's probe is
    refused, and the lookup still ends well within its timeout."""
    exe = mosquitto_exe()
    passwd = password_file(tmp_path, [("busbridge-sim", "b0ard-pw"), ("ci", "ci-pw")])
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite busbridge/boards/%u/#\n"
                   "user ci\ntopic read busbridge/boards/#\n")
    broker = Mosquitto(exe, tmp_path, extra=f"password_file {passwd}\nacl_file {acl}\n")
    async with board_announced(broker, f"busbridge-sim:b0ard-pw@{broker.url}") as (server,
                                                                                 presence):
        await wait_for(lambda: presence.connects == 1, what="the board to announce itself")
        t0 = time.monotonic()
        assert await resolve("busbridge-sim", f"ci:ci-pw@{broker.url}", timeout=5) == (
            "127.0.0.1", server.port)
        assert time.monotonic() - t0 < 4
        with pytest.raises(DiscoveryError, match="online boards: busbridge-sim"):
            await resolve("lab-pi-9", f"ci:ci-pw@{broker.url}", timeout=5)
