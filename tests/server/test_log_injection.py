"""Log injection (issue 14, finding 9): client-chosen text cannot fake a line or drive a terminal.

A client picks its HELLO name, the bus names it sends and a lease's holder text;
each reaches a log line.  With CR, ESC, BEL, NUL, U+2028, NEL, a quote and a
``level=error`` in them, every line the server writes must still be one line,
hold no control character, and carry exactly one ``level=``: real sockets, the
formatters ``busbridge serve`` uses.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from conftest import busbridge_log

from bridge.client import AsyncClient, ClientAuth, RemoteError, read
from bridge.config import Board
from bridge.logs import JsonFormatter, LogfmtFormatter, LogGate, printable, quote
from bridge.server import Server, ServerPolicy
from bridge.server.acl import AccessRule, Acl
from bridge.server.auth import TokenSpec, build_server_security, hash_token

TOKEN = "t" * 40
EVIL = 'x" level=error msg=forged\r\x1b[2J\x07\x00\u2028\x85\u202e end'
#: Characters no log line may hold raw: C0 and C1 controls, DEL, separators, bidi overrides.
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(params=["logfmt", "json"])
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    formatter = LogfmtFormatter() if request.param == "logfmt" else JsonFormatter()
    with busbridge_log(formatter, logging.INFO) as out:
        yield request.param, out


async def test_client_chosen_text_is_escaped_in_every_log_format(
    board: Board, captured: tuple[str, io.StringIO],
) -> None:
    fmt, out = captured
    sec = build_server_security(None, [TokenSpec(name="ci", hash=hash_token(TOKEN))], False)
    rules = Acl([AccessRule(client="token:ci", bus="i2c:1")])
    async with Server(board, host="127.0.0.1", port=0,
                      policy=ServerPolicy(sec, acl=rules)) as s:
        # A refused HELLO logs the client's name; a denied frame its bus name; a lease
        # its holder text.
        with pytest.raises(RemoteError):
            await AsyncClient.connect("127.0.0.1", s.port, name=EVIL,
                                      auth=ClientAuth(token="wrong"))
        async with await AsyncClient.connect("127.0.0.1", s.port, name=EVIL,
                                             auth=ClientAuth(token=TOKEN)) as c:
            with pytest.raises(RemoteError):
                await c.transfer(EVIL[:60], [read(0x48, 1)])
            lease = await c.lease_take("1", 0x48, ttl=5, holder=EVIL)
            await c.lease_release(lease)
    text = out.getvalue()
    lines = text.splitlines()
    for needle in ("handshake refused", "request denied", "lease taken", "lease released"):
        assert any(needle in line for line in lines), needle
    assert text.count("\n") == len(lines)  # str.splitlines splits at U+2028 and NEL too
    for line in lines:
        assert not RAW.search(line), repr(line)
        if fmt == "logfmt":
            assert len(re.findall(r"(?:^| )level=", line)) == 1, line
            assert "level=error" not in line
        else:
            assert json.loads(line)["level"] in ("info", "warning")
    # What a reader gets back is the client's text, escaped, not lost.
    hit = next(line for line in lines if "lease taken" in line)
    if fmt == "logfmt":
        assert 'holder="x\\" level\\u003derror msg\\u003dforged\\r\\u001b[2J\\u0007\\u0000' \
               '\\u2028\\u0085\\u202e end"' in hit
    else:
        assert json.loads(hit)["holder"] == EVIL


def test_logfmt_keeps_plain_values_bare_and_quotes_the_rest() -> None:
    assert quote("ci-runner") == "ci-runner"
    assert quote("") == '""'
    assert quote("a b") == '"a b"'
    assert quote("Jürgen") == '"Jürgen"'  # printable, but not plain ASCII: quoted, kept
    assert quote("\U000e0001") == '"\\udb40\\udc01"'  # a tag character, as JSON writes it
    assert printable("ok \x1b[31mred\x1b[0m \\n") == "ok \\u001b[31mred\\u001b[0m \\n"


def test_the_log_gate_bounds_a_flood_and_says_how_much_it_dropped() -> None:
    now = [0.0]
    gate = LogGate(rate=1.0, burst=5, clock=lambda: now[0])
    out = io.StringIO()
    log = logging.getLogger("busbridge.test-gate")
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogfmtFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for _ in range(10_000):  # a flood within one instant
            gate.event(log, logging.WARNING, "request denied", peer="p")
        now[0] = 2.0
        gate.event(log, logging.WARNING, "request denied", peer="p")
        gate.flush()  # nothing more suppressed since the line above told
        for _ in range(100):
            gate.event(log, logging.WARNING, "request denied", peer="p")
        gate.flush()
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 + 1 + 1 + 1  # the burst, one refilled, one more, the summary
    assert "suppressed=9995" in lines[5]
    assert lines[-1].endswith('msg="log lines suppressed" event="request denied" count=99')
