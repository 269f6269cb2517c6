"""TLS and tokens as clients use them: certificate checks, the CLI,
``busbridge run`` and the vhost-user link, against a real server on 127.0.0.1.

Certificates come from throwaway CAs made by ``trustme`` (the ``pki`` fixture of
tests/conftest.py); nothing is mocked.  The server's side is tests/server/test_security.py.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TOKEN, Pki, Running, start_server_thread, stop_server_thread

from bridge.cli.main import cli
from bridge.client import AsyncClient, RemoteError
from bridge.client.auth import ClientAuth
from bridge.config import board_config_from_toml_text, load_board
from bridge.server import Server, ServerPolicy
from bridge.server.auth import TlsSettings, TokenSpec, TokenStore, build_server_security, hash_token

BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


# -- TLS -------------------------------------------------------------------------------------


async def test_tls_client_refuses_a_server_it_does_not_trust(tls_server: Server) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await AsyncClient.connect("127.0.0.1", tls_server.port, auth=ClientAuth(tls=True))


async def test_tls_server_name_is_checked(tls_server: Server, pki: Pki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await AsyncClient.connect("127.0.0.1", tls_server.port, auth=ClientAuth(
            cafile=str(pki.ca), server_hostname="lab-pi.example"))


# -- the CLI and the drop-in layers as clients -----------------------------------------------


@pytest.fixture
def secured_thread(pki: Pki) -> Iterator[Running]:
    """TLS with both client certificates and tokens, on a server thread."""
    tls = TlsSettings(cert=str(pki.server), key=str(pki.server))
    sec = build_server_security(tls, [TokenSpec(name="ci", hash=hash_token(TOKEN))], False)
    running, t = start_server_thread(load_board(None), policy=ServerPolicy(security=sec))
    try:
        yield running
    finally:
        stop_server_thread(running, t)


def test_cli_talks_tls_with_a_token_from_the_environment(secured_thread: Running, pki: Pki,
                                                         tmp_path: Path) -> None:
    args = ["--connect", secured_thread.url, "--tls-ca", str(pki.ca),
            "i2c", "get", "-y", "1", "0x48", "0x0f", "w"]
    ok = CliRunner().invoke(cli, args, env={"BUSBRIDGE_TOKEN": TOKEN})
    assert (ok.exit_code, ok.output.strip()) == (0, "0x1701")
    token_file = tmp_path / "token"
    token_file.write_text("guess\n")
    bad = CliRunner().invoke(cli, ["--token-file", str(token_file), *args],
                             env={"BUSBRIDGE_TOKEN": None})
    assert bad.exit_code == 1
    assert "refused the connection: invalid token" in bad.output


def test_busbridge_run_hands_tls_flags_and_token_to_the_program(
    secured_thread: Running, pki: Pki,
) -> None:
    program = ("import smbus2; b = smbus2.SMBus(1); "
               "print(hex(b.read_word_data(0x48, 0x0f)))")
    env = {**os.environ, "BUSBRIDGE_TOKEN": TOKEN}
    env.pop("BUSBRIDGE_TLS_CA", None)
    r = subprocess.run([*BUSBRIDGE, "--connect", secured_thread.url, "--tls-ca", str(pki.ca),
                        "run", "--", sys.executable, "-c", program],
                       capture_output=True, text=True, env=env, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "0x1701"), r.stderr
    env.pop("BUSBRIDGE_TOKEN")
    r = subprocess.run([*BUSBRIDGE, "--connect", secured_thread.url, "--tls-ca", str(pki.ca),
                        "run", "--", sys.executable, "-c", program],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert "refused the connection: this server requires a token" in r.stderr


def test_busbridge_run_lease_authenticates_its_lease_connection(
    secured_thread: Running, pki: Pki,
) -> None:
    """The connection that takes and renews --lease leases presents the token and TLS too."""
    program = "import os; print(len(os.environ['BUSBRIDGE_LEASE'].split(',')))"
    env = {**os.environ, "BUSBRIDGE_TOKEN": TOKEN}
    env.pop("BUSBRIDGE_LEASE", None)
    r = subprocess.run([*BUSBRIDGE, "run", "--connect", secured_thread.url, "--tls-ca",
                        str(pki.ca), "--no-native", "--lease", "i2c:1@0x50", "--",
                        sys.executable, "-c", program],
                       capture_output=True, text=True, env=env, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "1"), r.stderr
    assert "busbridge run: holding lease" in r.stderr


def test_token_new_gives_a_token_file_and_board_lines_that_accept_it(tmp_path: Path) -> None:
    path = tmp_path / "ci.token"
    r = CliRunner().invoke(cli, ["token", "new", "--name", "ci", "--token-file", str(path)])
    assert r.exit_code == 0, r.output
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    token = path.read_text().strip()
    assert token not in r.output
    lines = r.output[r.output.index("[[server.tokens]]"):]
    config = board_config_from_toml_text('name = "b"\n' + lines, "t.toml")
    store = TokenStore(config.server.tokens)
    assert (store.verify(token), store.verify(token + "x")) == ("ci", None)
    again = CliRunner().invoke(cli, ["token", "hash", "--name", "ci"], input=token + "\n")
    assert again.exit_code == 0
    assert TokenStore(board_config_from_toml_text(
        f'name = "b"\n{again.output}', "t.toml").server.tokens).verify(token) == "ci"


async def test_vhost_user_link_authenticates_too(token_server: Server) -> None:
    from bridge.vhost.link import ServerLink

    link = ServerLink("127.0.0.1", token_server.port, auth=ClientAuth(token=TOKEN))
    assert (await link.start()).board == "busbridge-sim"
    await link.close()
    with pytest.raises(RemoteError, match="requires a token"):
        await ServerLink("127.0.0.1", token_server.port).start()
