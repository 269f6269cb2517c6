"""Issue 17 items 9 and 10: a client at the wrong kind of peer is told what is wrong.

Real peers on 127.0.0.1: busbridge servers with and without TLS (``trustme``
certificates), a server that answers like HTTP, and a port that accepts and says
nothing.  Both clients (asyncio and blocking) must say the same precise thing,
and a TLS server must log the clients it refused, once per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme

from bridge.client import AsyncClient, BlockingClient, ConnectionLost, ConnectTimeout
from bridge.client.auth import ClientAuth
from bridge.client.diagnose import NotBusbridge, TLSMismatch
from bridge.config import Board
from bridge.server import Server, ServerPolicy
from bridge.server.auth import TlsSettings, build_server_security
from bridge.server.tlsgate import RefusalLog


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca, client_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(d / "server.pem"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    return {"ca": str(d / "ca.pem"), "server": str(d / "server.pem"),
            "client_ca": str(d / "client-ca.pem")}


async def _serve(board: Board, tls: TlsSettings | None) -> Server:
    policy = ServerPolicy(security=build_server_security(tls, [], False)) if tls else None
    s = Server(board, host="127.0.0.1", port=0, policy=policy)
    await s.start()
    return s


@pytest.fixture
async def tls_server(board: Board, pki: dict[str, str]) -> AsyncIterator[Server]:
    s = await _serve(board, TlsSettings(cert=pki["server"], key=pki["server"]))
    yield s
    await s.close(grace=1.0)


@pytest.fixture
async def mtls_server(board: Board, pki: dict[str, str]) -> AsyncIterator[Server]:
    s = await _serve(board, TlsSettings(cert=pki["server"], key=pki["server"],
                                        client_ca=pki["client_ca"]))
    yield s
    await s.close(grace=1.0)


async def connect(kind: str, port: int, auth: ClientAuth | None = None,
                  timeout: float = 5.0) -> None:
    """Connect with the asyncio or the blocking client (on a thread: the server is on this
    loop); only the failure matters."""
    if kind == "async":
        c = await AsyncClient.connect("127.0.0.1", port, auth=auth, timeout=timeout)
        await c.ping()  # TLS 1.3 reports some refusals on the first read
        await c.close()
    else:
        def blocking() -> None:
            with BlockingClient("127.0.0.1", port, auth=auth, timeout=timeout) as b:
                b.ping()
        await asyncio.to_thread(blocking)


def refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "TLS handshake refused"]


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_plain_client_at_a_tls_server_is_told_to_use_tls_and_the_server_logs_it(
        tls_server: Server, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "busbridge.server")
    with pytest.raises(TLSMismatch) as e:
        await connect(kind, tls_server.port)
    msg = str(e.value)
    assert msg.startswith(f"127.0.0.1:{tls_server.port} closed the connection before its "
                          "WELCOME; it speaks TLS and this client does not: connect with TLS: "
                          "--tls-ca CA.pem")
    assert isinstance(e.value, ssl.SSLError)
    (logged,) = refusals(caplog)
    assert logged["peer"].startswith("127.0.0.1:")
    assert logged["reason"].startswith("not TLS (")
    assert "a plain-TCP client" in logged["reason"]


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_tls_client_at_a_plain_server_is_told_it_does_not_speak_tls(
        server: Server, pki: dict[str, str], kind: str) -> None:
    with pytest.raises(TLSMismatch, match=r"does not speak TLS \(its answer is not a TLS "
                                          r"record: [A-Z_]+\): connect without --tls"):
        await connect(kind, server.port, ClientAuth(cafile=pki["ca"]))


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_client_without_a_certificate_at_a_mutual_tls_server_is_told_to_give_one(
        mtls_server: Server, pki: dict[str, str], kind: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "busbridge.server")
    with pytest.raises(TLSMismatch, match=r"it requires a client certificate; give one with "
                                          r"--tls-cert CERT\.pem --tls-key KEY\.pem"):
        await connect(kind, mtls_server.port, ClientAuth(cafile=pki["ca"]))
    (logged,) = refusals(caplog)
    assert logged["reason"].startswith("no client certificate")


async def test_the_servers_refusal_log_is_one_line_per_burst(
        tls_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "busbridge.server")
    for _ in range(5):  # plain clients: each is refused
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
        writer.write(b"\x00\x00\x00\x05hello")
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
    assert tls_server.tls_refusals.total == 5
    assert len(refusals(caplog)) == 1


def test_a_burst_ends_with_a_count_of_what_was_not_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "busbridge.server")
    now = [0.0]
    log = RefusalLog(period=10.0, clock=lambda: now[0])
    for t in (0.0, 1.0, 2.0, 12.0):
        now[0] = t
        log.refused("10.0.0.7:40000", "not TLS")
    assert [r.get("not_logged_before") for r in refusals(caplog)] == [None, 2]


@pytest.fixture
def http_like() -> Iterator[int]:
    """A peer that answers every connection like a web server, at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            with c:
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                c.settimeout(5)
                with contextlib.suppress(OSError):
                    c.recv(1024)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    srv.close()


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_a_peer_that_is_not_busbridge_is_named_as_such(http_like: int,
                                                              kind: str) -> None:
    with pytest.raises(NotBusbridge) as e:
        await connect(kind, http_like)
    assert str(e.value) == (f"127.0.0.1:{http_like} is not a busbridge server (got "
                            "b'HTTP/1.1 400 Bad Request\\r\\nContent-Length'…)")
    assert isinstance(e.value, ConnectionLost)


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_a_silent_peer_says_it_got_nothing(kind: str) -> None:
    with socket.socket() as silent:  # accepts (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(ConnectTimeout, match=rf"no WELCOME from 127.0.0.1:{port} within "
                                                 r"1 s \(got nothing\): not a busbridge"):
            await connect(kind, port, timeout=1.0)


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_an_untrusted_certificate_is_still_a_certificate_error(tls_server: Server,
                                                                    kind: str) -> None:
    """What code catching ``ssl.SSLCertVerificationError`` relied on still holds."""
    with pytest.raises(ssl.SSLCertVerificationError, match="give the CA that signed it with "
                                                           "--tls-ca"):
        await connect(kind, tls_server.port, ClientAuth(tls=True))
