"""The server's TLS, mutual TLS, tokens and non-loopback refusal: real ssl on 127.0.0.1.

Certificates come from throwaway CAs made by ``trustme`` (the ``pki`` fixture of
tests/conftest.py); nothing is mocked: the server and the client negotiate real
TLS over real TCP.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import OTHER_TOKEN, TOKEN, Pki

from bridge.cli.main import cli
from bridge.client import AsyncClient, ConnectionLost, RemoteError, read, write
from bridge.client.auth import ClientAuth
from bridge.config import Board, board_config_from_toml_text, load_board
from bridge.server import Server, ServerPolicy
from bridge.server.auth import (
    InsecureListenError,
    TlsSettings,
    TokenSpec,
    TokenStore,
    build_server_security,
    check_exposure,
    hash_token,
    is_loopback,
    new_token,
)
from bridge.server.settings import server_policy
from protocol import ErrorCode

BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


async def start(board: Board, **kw: object) -> Server:
    s = Server(board, host="127.0.0.1", port=0, policy=ServerPolicy(**kw))  # type: ignore[arg-type]
    await s.start()
    return s


@pytest.fixture
async def mtls_server(board: Board, pki: Pki) -> AsyncIterator[Server]:
    tls = TlsSettings(cert=str(pki.server), key=str(pki.server), client_ca=str(pki.client_ca))
    s = await start(board, security=build_server_security(tls, [], False))
    yield s
    await s.close(grace=1.0)


async def device_id(c: AsyncClient) -> bytes:
    (data,) = await c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
    return data


# -- TLS -------------------------------------------------------------------------------------


async def test_tls_round_trip_with_the_servers_ca(tls_server: Server, pki: Pki) -> None:
    async with await AsyncClient.connect("127.0.0.1", tls_server.port,
                                         auth=ClientAuth(cafile=str(pki.ca))) as c:
        assert await device_id(c) == b"\x01\x17"
        assert c._transport is not None
        assert c._transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")


async def test_plain_client_gets_nothing_from_a_tls_server(tls_server: Server) -> None:
    with pytest.raises((ConnectionLost, TimeoutError, OSError)):
        await AsyncClient.connect("127.0.0.1", tls_server.port, timeout=2.0)


async def test_mtls_accepts_a_client_certificate_and_names_the_client_by_cn(
    mtls_server: Server, pki: Pki,
) -> None:
    async with await AsyncClient.connect("127.0.0.1", mtls_server.port, auth=ClientAuth(
            cafile=str(pki.ca), certfile=str(pki.client))) as c:
        assert await device_id(c) == b"\x01\x17"
        assert [s.client for s in mtls_server.sessions] == ["cn:ci-runner"]


@pytest.mark.parametrize("cert", [None, "stranger"])
async def test_mtls_refuses_clients_without_a_trusted_certificate(
    mtls_server: Server, pki: Pki, cert: str | None,
) -> None:
    certfile = None if cert is None else str(pki.stranger)

    async def connect_and_ping() -> None:
        c = await AsyncClient.connect("127.0.0.1", mtls_server.port, auth=ClientAuth(
            cafile=str(pki.ca), certfile=certfile), timeout=3.0)
        await c.ping()  # TLS 1.3 reports the refusal on the first read

    with pytest.raises((ssl.SSLError, ConnectionLost, ConnectionResetError)):
        await connect_and_ping()
    # ...and a client with a good certificate is still served.
    async with await AsyncClient.connect("127.0.0.1", mtls_server.port, auth=ClientAuth(
            cafile=str(pki.ca), certfile=str(pki.client))) as ok:
        assert await device_id(ok) == b"\x01\x17"


# -- tokens ----------------------------------------------------------------------------------


async def test_right_token_is_accepted_and_names_the_client(token_server: Server) -> None:
    async with await AsyncClient.connect("127.0.0.1", token_server.port,
                                         auth=ClientAuth(token=TOKEN)) as c:
        assert await device_id(c) == b"\x01\x17"
        assert [s.client for s in token_server.sessions] == ["token:ci"]


async def test_wrong_token_is_refused_with_unauthorized(token_server: Server) -> None:
    with pytest.raises(RemoteError) as e:
        await AsyncClient.connect("127.0.0.1", token_server.port,
                                  auth=ClientAuth(token="guess"))
    assert e.value.code == ErrorCode.UNAUTHORIZED
    assert e.value.message == "invalid token"


async def test_missing_token_is_refused_with_unauthorized(token_server: Server) -> None:
    with pytest.raises(RemoteError) as e:
        await AsyncClient.connect("127.0.0.1", token_server.port)
    assert e.value.code == ErrorCode.UNAUTHORIZED
    assert e.value.message == "this server requires a token"


async def test_a_refused_client_does_not_disturb_a_connected_one(token_server: Server) -> None:
    async with await AsyncClient.connect("127.0.0.1", token_server.port,
                                         auth=ClientAuth(token=TOKEN)) as c:
        for bad in ("guess", None):
            with pytest.raises(RemoteError):
                await AsyncClient.connect("127.0.0.1", token_server.port,
                                          auth=ClientAuth(token=bad))
        assert await device_id(c) == b"\x01\x17"


async def test_requests_pipelined_behind_a_refused_hello_never_run(
    token_server: Server, board: Board,
) -> None:
    import asyncio

    from protocol import Connection, Hello, HelloInfo, I2CRequest, Role
    conn = Connection(Role.CLIENT)
    data = conn.send(Hello(HelloInfo(client="eager", token="guess")))
    data += conn.send(I2CRequest(1, "1", (write(0x50, [0x00, 0x00, 0xAA]),)))
    eeprom = board.i2c["1"]
    before = len(eeprom.log_snapshot())  # type: ignore[attr-defined]
    reader, writer = await asyncio.open_connection("127.0.0.1", token_server.port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    writer.close()
    conn.receive_data(answer)
    (err,) = list(conn.events())
    assert err.code == ErrorCode.UNAUTHORIZED  # type: ignore[union-attr]
    assert len(eeprom.log_snapshot()) == before  # type: ignore[attr-defined]


async def test_tokens_are_never_logged(board: Board, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="busbridge")
    specs = [TokenSpec(name="ci", hash=hash_token(TOKEN))]
    s = await start(board, security=build_server_security(None, specs, False))
    try:
        async with await AsyncClient.connect("127.0.0.1", s.port,
                                             auth=ClientAuth(token=TOKEN)) as c:
            await device_id(c)
        with pytest.raises(RemoteError):
            await AsyncClient.connect("127.0.0.1", s.port, auth=ClientAuth(token=OTHER_TOKEN))
    finally:
        await s.close(grace=1.0)
    text = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "handshake refused" in text
    assert TOKEN not in text
    assert OTHER_TOKEN not in text


def test_token_store_checks_every_hash_and_never_keeps_the_token() -> None:
    a, b = new_token(), new_token()
    store = TokenStore([TokenSpec(name="a", hash=hash_token(a)),
                        TokenSpec(name="b", hash=hash_token(b))])
    assert (store.verify(a), store.verify(b), store.verify(a[:-1])) == ("a", "b", None)
    assert hash_token(a) != hash_token(a)  # salted
    assert TOKEN not in repr(ClientAuth(token=TOKEN))


async def test_an_overlong_token_is_malformed_and_not_echoed(token_server: Server) -> None:
    import asyncio

    import msgpack

    secret = "s" * 300
    with pytest.raises(ValueError, match=r"1\.\.256"):  # the client refuses to send it
        await AsyncClient.connect("127.0.0.1", token_server.port,
                                  auth=ClientAuth(token=secret))
    body = msgpack.packb([0, 0, {"version": 1, "client": "x", "token": secret}])
    reader, writer = await asyncio.open_connection("127.0.0.1", token_server.port)
    writer.write(len(body).to_bytes(4, "big") + body)
    from protocol import Connection, Role
    conn = Connection(Role.CLIENT)
    conn.receive_data(await asyncio.wait_for(reader.read(), 5))
    writer.close()
    (err,) = list(conn.events())
    assert err.code == ErrorCode.MALFORMED  # type: ignore[union-attr]
    assert "sss" not in err.message  # type: ignore[union-attr]


# -- listening beyond loopback ---------------------------------------------------------------


async def test_server_refuses_a_non_loopback_listen_without_authentication(
    board: Board,
) -> None:
    s = Server(board, host="0.0.0.0", port=0)
    with pytest.raises(InsecureListenError, match="--insecure"):
        await s.start()
    assert s._server is None  # refused before anything was bound


def test_exposure_rules() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host), host
        check_exposure(host, authenticated=False, insecure=False)
    for host in ("0.0.0.0", "::", "", "192.0.2.7"):
        assert not is_loopback(host), host
        with pytest.raises(InsecureListenError):
            check_exposure(host, authenticated=False, insecure=False)
        check_exposure(host, authenticated=True, insecure=False)  # tokens or client certs
        check_exposure(host, authenticated=False, insecure=True)  # --insecure


def test_tls_without_client_certificates_is_not_authentication(pki: Pki) -> None:
    sec = build_server_security(TlsSettings(cert=str(pki.server), key=str(pki.server)), [],
                                False)
    assert not sec.authenticated
    mtls = TlsSettings(cert=str(pki.server), key=str(pki.server), client_ca=str(pki.client_ca))
    assert build_server_security(mtls, [], False).authenticated


def test_serve_cli_refuses_all_interfaces_without_auth_and_says_why() -> None:
    r = CliRunner().invoke(cli, ["serve", "--listen", "0.0.0.0:0"])
    assert r.exit_code == 2
    assert "refusing to listen on 0.0.0.0" in r.output
    assert "--insecure" in r.output


def test_serve_cli_reports_a_bad_certificate_path(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["serve", "--tls-cert", str(tmp_path / "none.pem"),
                                 "--tls-key", str(tmp_path / "none.pem")])
    assert r.exit_code == 2
    assert "TLS:" in r.output


def test_insecure_flag_and_board_key_both_allow_an_unauthenticated_wide_listen() -> None:
    plain = board_config_from_toml_text('name = "b"\n[server]\nlisten = "0.0.0.0:7707"\n')
    opted = board_config_from_toml_text(
        'name = "b"\n[server]\nlisten = "0.0.0.0:7707"\ninsecure = true\n')
    for settings, flag, allowed in ((plain.server, False, False), (plain.server, True, True),
                                    (opted.server, False, True)):
        sec = server_policy(settings, insecure=flag).security
        if allowed:
            check_exposure(settings.host, sec.authenticated, sec.insecure)  # never binds
        else:
            with pytest.raises(InsecureListenError):
                check_exposure(settings.host, sec.authenticated, sec.insecure)


# -- configuration ---------------------------------------------------------------------------


BOARD_TOML = """
name = "lab"
[server]
listen = "0.0.0.0:7707"
[server.tls]
cert = "server.pem"
key = "server.pem"
client_ca = "client-ca.pem"
[[server.tokens]]
name = "ci"
hash = "{hash}"
[server.limits]
max_clients = 8
rate = 50
idle_timeout_s = 600
keepalive_idle_s = 30
[[server.access]]
client = "ci"
bus = "i2c:1"
addresses = ["0x48", "0x50-0x57"]
access = "read-only"
[[i2c]]
name = "1"
backend = "sim"
"""


def test_board_file_security_settings_resolve_relative_to_the_file(pki: Pki) -> None:
    path = pki.dir / "board.toml"
    path.write_text(BOARD_TOML.format(hash=hash_token(TOKEN)))
    board = load_board(str(path))
    try:
        policy = server_policy(board.server, board.source)
        sec = policy.security
        assert sec.ssl is not None
        assert sec.client_certs
        assert sec.tokens is not None
        assert sec.tokens.verify(TOKEN) == "ci"
        assert policy.limit_settings.max_clients == 8
        assert policy.acl is not None
        check_exposure(board.server.host, sec.authenticated, sec.insecure)  # does not raise
    finally:
        board.close()


@pytest.mark.parametrize(("change", "problem"), [
    (("hash = \"{hash}\"", "hash = \"plain-token\""), "sha256:SALT:DIGEST"),
    (("bus = \"i2c:1\"", "bus = \"1\""), "must be \"i2c:NAME\""),
    (("addresses = [\"0x48\", \"0x50-0x57\"]", "addresses = [\"0x80\"]"), "not within"),
    (("access = \"read-only\"", "access = \"ro\""), "access"),
    (("rate = 50", "rate = -1"), "rate"),
    (("max_clients = 8", "max_client = 8"), "unknown setting"),
])
def test_bad_security_settings_are_reported(change: tuple[str, str], problem: str) -> None:
    from bridge.config import BoardConfigError

    text = BOARD_TOML.replace(*change).format(hash=hash_token(TOKEN))
    with pytest.raises(BoardConfigError, match=problem):
        board_config_from_toml_text(text, "lab.toml")


SERVED_TOML = """
name = "lab"
[server]
listen = "127.0.0.1:0"
[server.tls]
cert = "server.pem"
key = "server.pem"
[[server.tokens]]
name = "ci"
hash = "{hash}"
[[server.access]]
client = "ci"
bus = "i2c:1"
addresses = ["0x48"]
access = "read-only"
[[i2c]]
name = "1"
backend = "sim"
[[i2c.devices]]
type = "regmap"
address = 0x48
registers = {{ 0x00 = 0x5A }}
"""


def test_busbridge_serve_applies_the_board_files_security(pki: Pki) -> None:
    import queue
    import re
    import signal
    import threading

    path = pki.dir / "served.toml"
    path.write_text(SERVED_TOML.format(hash=hash_token(TOKEN)))
    proc = subprocess.Popen([*BUSBRIDGE, "serve", "--config", str(path)],
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr or ()],
                     daemon=True).start()
    try:
        port = None
        seen = []
        while port is None:
            seen.append(lines.get(timeout=20))
            m = re.search(r"on 127\.0\.0\.1:(\d+) ", seen[-1])
            port = m and m.group(1)
        assert "TLS; authentication: tokens; access rules: 1" in lines.get(timeout=5)
        env = {**os.environ, "BUSBRIDGE_TOKEN": TOKEN, "BUSBRIDGE_TLS_CA": str(pki.ca)}
        base = [*BUSBRIDGE, "--connect", f"127.0.0.1:{port}", "i2c"]
        get = subprocess.run([*base, "get", "-y", "1", "0x48"], capture_output=True,
                             text=True, env=env, timeout=30)
        assert (get.returncode, get.stdout) == (0, "0x5a\n"), get.stderr
        put = subprocess.run([*base, "set", "-y", "1", "0x48", "0x00", "0x01"],
                             capture_output=True, text=True, env=env, timeout=30)
        assert put.returncode == 1
        assert "access rule 0 (client 'ci', i2c:1 0x48, read-only) forbids writes" in put.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
