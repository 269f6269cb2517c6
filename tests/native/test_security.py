"""TLS and tokens reach native programs: the agent connects as the Python drop-ins do."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import Running, start_server_thread, stop_server_thread

from bridge.config import load_board
from bridge.server import ServerPolicy
from bridge.server.auth import TlsSettings, TokenSpec, build_server_security, hash_token

from .conftest import BUSBRIDGE, need

TOKEN = "tok-" + "n" * 40


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, preload: Path
            ) -> Iterator[tuple[Running, Path]]:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(d / "server.pem"))
    tls = TlsSettings(cert=str(d / "server.pem"), key=str(d / "server.pem"))
    sec = build_server_security(tls, [TokenSpec(name="ci", hash=hash_token(TOKEN))], False)
    running, t = start_server_thread(load_board(None), policy=ServerPolicy(security=sec))
    try:
        yield running, d / "ca.pem"
    finally:
        stop_server_thread(running, t)


def test_i2cget_over_tls_with_a_token(secured: tuple[Running, Path]) -> None:
    need("i2cget", "i2c-tools")
    running, ca = secured
    env = {**os.environ, "BUSBRIDGE_TOKEN": TOKEN, "PATH": os.environ["PATH"] + ":/usr/sbin"}
    cmd = [*BUSBRIDGE, "--connect", running.url, "--tls-ca", str(ca), "run", "--no-check", "--",
           "i2cget", "-y", "1", "0x48", "0x0f", "w"]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert (ok.returncode, ok.stdout.strip()) == (0, "0x1701"), ok.stderr
    env.pop("BUSBRIDGE_TOKEN")
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert bad.returncode != 0
    # The native program cannot say why; the agent does, once.
    assert "refused the connection" in bad.stderr
    assert "requires a token" in bad.stderr
