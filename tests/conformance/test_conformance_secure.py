"""The conformance kit against a board with mutual TLS, tokens, access rules and limits.

Slow: the whole kit runs over TLS, and the policy checks wait out the handshake and
idle timeouts.  Certificates come from ``trustme``; the token from
``busbridge token new``, as docs/security.md tells a user to make one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from bridge.conformance import Policy, Report, Target, run_checks

from .serve import Serve
from .test_conformance import CHECK_IDS, KNOWN_FAILURES, KNOWN_FAILURES_SECURE, TIMEOUT, judge

pytestmark = pytest.mark.slow

DEFAULT_BOARD = (Path(__file__).resolve().parents[2] / "bridge" / "config" / "boards"
                 / "default.toml")

HANDSHAKE_TIMEOUT_S = 2
IDLE_TIMEOUT_S = 4
MAX_CLIENTS = 10

#: Rules for client "ci": everything, except that 0x76 on I2C bus 2 is read-only.  Bus 1
#: has a whole-bus rule, so bus-wide leases there are allowed (§8.7).
ACCESS = """
[[server.access]]
client = "ci"
bus = "i2c:1"

[[server.access]]
client = "ci"
bus = "spi:*"

[[server.access]]
client = "ci"
bus = "i2c:*"
addresses = ["0x00-0x75", "0x77-0x7f"]

[[server.access]]
client = "ci"
bus = "i2c:*"
ten_bit = true
addresses = ["0x000-0x3ff"]

[[server.access]]
client = "ci"
bus = "i2c:2"
addresses = ["0x76"]
access = "read-only"
"""


def _make_board(d: Path, mutual: bool) -> Target:
    """A default board with TLS and a token; ``mutual`` adds client certificates,
    access rules and limits.  Returns how the kit reaches it (port filled in later)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(d / "server.pem"))
    ca.issue_cert("ci@conformance", common_name="ci").private_key_and_cert_chain_pem \
        .write_to_path(str(d / "ci.pem"))
    made = subprocess.run([sys.executable, "-m", "bridge.cli", "token", "new", "--name", "ci",
                           "--token-file", str(d / "ci.token")],
                          capture_output=True, text=True, timeout=60, check=True)
    said = made.stdout + made.stderr  # with --token-file the board lines go to stderr
    board = DEFAULT_BOARD.read_text(encoding="utf-8") + f"""
[server.tls]
cert = "server.pem"
key = "server.pem"
{'client_ca = "ca.pem"' if mutual else ''}

{said[said.index("[[server.tokens]]"):]}
"""
    if mutual:
        board += f"""
[server.limits]
handshake_timeout_s = {HANDSHAKE_TIMEOUT_S}
idle_timeout_s = {IDLE_TIMEOUT_S}
max_clients = {MAX_CLIENTS}
{ACCESS}
"""
    (d / "board.toml").write_text(board, encoding="utf-8")
    return Target("127.0.0.1", 0, cafile=str(d / "ca.pem"),
                  certfile=str(d / "ci.pem") if mutual else None,
                  token=(d / "ci.token").read_text(encoding="utf-8").strip(), timeout=TIMEOUT)


@pytest.fixture(scope="module", params=["tls-token", "mutual-tls-token-rules"])
def secure(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Target, Policy]]:
    mutual = request.param != "tls-token"
    d = tmp_path_factory.mktemp(request.param)
    target = _make_board(d, mutual)
    server = Serve("--config", str(d / "board.toml"))
    target.port = server.port
    policy = Policy(handshake_timeout_s=HANDSHAKE_TIMEOUT_S, idle_timeout_s=IDLE_TIMEOUT_S,
                    max_clients=MAX_CLIENTS, denied="2@0x76") if mutual else Policy()
    try:
        yield server, target, policy
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secure_report(secure: tuple[Serve, Target, Policy]) -> Report:
    _, target, policy = secure
    return run_checks(target, policy=policy)


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_tls_tokens_and_rules(secure_report: Report, check_id: str) -> None:
    judge(secure_report, check_id, {**KNOWN_FAILURES, **KNOWN_FAILURES_SECURE})


def test_secure_server_says_what_it_enforces(secure: tuple[Serve, Target, Policy]) -> None:
    """The board really is the configuration the checks above assume."""
    server, target, _ = secure
    said = "".join(server.lines)
    if target.certfile:
        assert "TLS; authentication: client certificates or tokens; access rules: 5" in said
    else:
        assert "TLS; authentication: tokens" in said
