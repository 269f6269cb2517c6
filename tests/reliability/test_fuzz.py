"""Fuzzing the server's request handling over a real socket, and the frame
decoder with atheris, while a well-behaved client keeps getting correct answers.

* ``test_server_survives_generated_streams`` (hypothesis, default run): each
  example is one connection carrying a generated stream (valid requests to
  real and unknown buses, PINGs, mutated frames, garbage bodies, with or
  without a HELLO first).  The server must answer in well-formed frames,
  answer every request of an all-valid stream exactly once, and close the
  connection once the client half-closes.
* ``test_server_long_fuzz`` (slow): the same checks on >= 100 000 frames from
  a seeded generator.
* ``test_atheris_*``: coverage-guided runs of scripts/fuzz_decoder.py (the
  decoder) and scripts/fuzz_server.py (a real server over real sockets), short
  by default and >= 100 000 inputs each in the slow suite.

A crash is any exception other than ProtocolError from the decoder, the server
stopping to serve (the good client's reads fail or stall), or a connection the
server never closes.
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, start_server_thread, stop_server_thread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.client import Client
from bridge.config import load_board
from protocol import SpiTransferHead, read, write

from .helpers import REPO, frame, hello, read_frames

TMP117 = 0x48
FAIL_NEXT, M_RD = 0x1, 0x2
ANSWERS = {4, 5, 7}  # RESULT, ERROR, PONG


# ---------------------------------------------------------------------------
# A server and a well-behaved client for the whole module
# ---------------------------------------------------------------------------


@dataclass
class GoodClient:
    """Reads the TMP117's ID register in a loop; every answer must be right."""

    url: str
    reads: int = 0
    wrong: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with Client.from_url(self.url, timeout=5) as c:
            while not self.stop.is_set():
                try:
                    (ident,) = c.transfer("1", [write(TMP117, [0x0F]), read(TMP117, 2)])
                except Exception as e:
                    self.wrong.append(repr(e))
                    return
                if ident != b"\x01\x17":
                    self.wrong.append(ident.hex())
                self.reads += 1
                time.sleep(0.005)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[Running, GoodClient]]:
    running, t = start_server_thread(load_board(None))
    good = GoodClient(running.url)
    gt = threading.Thread(target=good.run, name="good-client")
    gt.start()
    try:
        yield running, good
    finally:
        good.stop.set()
        gt.join(10)
        # The server notices the last client's close on its own thread: give it a moment.
        deadline = time.monotonic() + 5
        while running.server.sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        base = len(running.server.sessions)
        stop_server_thread(running, t)
        assert base == 0, f"{base} sessions leaked after the fuzzing"


def _serving(running: Running, good: GoodClient) -> None:
    before = good.reads
    deadline = time.monotonic() + 5
    while good.reads == before and not good.wrong and time.monotonic() < deadline:
        time.sleep(0.01)
    assert good.wrong == [], "the well-behaved client got a wrong answer"
    assert good.reads > before, "the server stopped serving the well-behaved client"


def _exchange(running: Running, data: bytes) -> tuple[list[list[Any]], bool]:
    with socket.create_connection((running.host, running.port), 5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already refused the stream; what it sent is still read
        return read_frames(s, timeout=10)


@dataclass
class Sent:
    data: bytes
    valid_ids: list[int]  # ids of request/PING frames sent unmodified
    all_valid: bool


def _check(sent: Sent, replies: list[list[Any]], closed: bool) -> None:
    assert closed, "the server did not close a connection the client half-closed"
    for f in replies:
        assert f[0] in {1, 4, 5, 6, 7}, f"unexpected frame type {f[0]}"
        if f[0] == 5:
            assert isinstance(f[2], str)
            assert isinstance(f[3], str)
            assert f[3]
    if sent.all_valid:
        # (A mutated frame may legally reuse the id of a request already answered.)
        answered = [f[1] for f in replies if f[0] in ANSWERS and f[1] != 0]
        assert sorted(answered) == sorted(sent.valid_ids), "not exactly one answer each"


# ---------------------------------------------------------------------------
# Frame generation: hypothesis strategies and a seeded generator
# ---------------------------------------------------------------------------

ADDRS = [0x48, 0x50, 0x18, 0x51, 0x2A, 0x7F, 0x00]
BUSES = ["1", "2", "0", "9"]


def _i2c_frame(rid: int, bus: str, msgs: list[tuple[int, int, bytes | int]],
               timeout: int | None) -> bytes:
    reqs = [[struct.pack("<HHI", a << 1, 0, fl), buf] for a, fl, buf in msgs]
    return frame([2, rid, bus, reqs, timeout])


def _spi_frame(rid: int, bus: str, cs: int, xfers: list[tuple[int, int, bytes | None, int]],
               timeout: int | None) -> bytes:
    """``xfers``: (bits_per_word, mode, tx or None for a half-duplex read, freq)."""
    items = [[SpiTransferHead(cs, bpw, 0, 0, 0, mode, freq, 0, 0, 0, 0).pack(), tx,
              len(tx) if tx else 8] for bpw, mode, tx, freq in xfers]
    return frame([3, rid, bus, cs, items, timeout])


@st.composite
def i2c_msgs(draw: st.DrawFn) -> list[tuple[int, int, bytes | int]]:
    n = draw(st.integers(1, 4))
    out: list[tuple[int, int, bytes | int]] = []
    for i in range(n):
        addr = draw(st.sampled_from(ADDRS))
        rd = draw(st.booleans())
        fn = FAIL_NEXT if i < n - 1 and draw(st.booleans()) else 0
        out.append((addr, fn | (M_RD if rd else 0),
                    draw(st.integers(0, 16)) if rd else draw(st.binary(max_size=8))))
    return out


@st.composite
def streams(draw: st.DrawFn) -> Sent:
    parts: list[bytes] = []
    valid_ids: list[int] = []
    handshake = draw(st.integers(0, 9)) > 0
    all_valid = handshake
    if handshake:
        parts.append(hello(client="fuzz"))
    for rid in range(1, draw(st.integers(1, 8)) + 1):
        kind = draw(st.sampled_from(["i2c", "i2c", "spi", "ping", "mutated", "garbage"]))
        if kind == "i2c":
            parts.append(_i2c_frame(rid, draw(st.sampled_from(BUSES)), draw(i2c_msgs()),
                                    draw(st.none() | st.integers(1, 2000))))
            valid_ids.append(rid)
        elif kind == "spi":
            xfers = draw(st.lists(st.tuples(st.sampled_from([8, 16, 7]), st.integers(0, 3),
                                            st.none() | st.binary(min_size=1, max_size=8),
                                            st.sampled_from([0, 1_000_000, 90_000_000])),
                                  min_size=1, max_size=3))
            parts.append(_spi_frame(rid, draw(st.sampled_from(BUSES)), draw(st.integers(0, 2)),
                                    xfers, None))
            valid_ids.append(rid)
        elif kind == "ping":
            parts.append(frame([6, rid]))
            valid_ids.append(rid)
        elif kind == "mutated":
            all_valid = False
            data = bytearray(_i2c_frame(rid, "1", draw(i2c_msgs()), None))
            for _ in range(draw(st.integers(1, 3))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            parts.append(bytes(data))
        else:
            all_valid = False
            parts.append(frame(draw(st.binary(max_size=40))) if draw(st.booleans())
                         else draw(st.binary(max_size=40)))
    return Sent(b"".join(parts), valid_ids if handshake else [], all_valid)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sent=streams())
def test_server_survives_generated_streams(
    fuzzed: tuple[Running, GoodClient], sent: Sent
) -> None:
    running, _good = fuzzed
    replies, closed = _exchange(running, sent.data)
    _check(sent, replies, closed)


def test_server_still_serves_after_the_fuzzing(fuzzed: tuple[Running, GoodClient]) -> None:
    running, good = fuzzed
    _serving(running, good)


class Generator:
    """Seeded frames: 60 % valid, 25 % mutated, 15 % garbage, 0.2 % fatal (mixed streams)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def msgs(self) -> list[tuple[int, int, bytes | int]]:
        r = self.r
        n = r.randint(1, 4)
        out: list[tuple[int, int, bytes | int]] = []
        for i in range(n):
            rd = r.random() < 0.5
            fn = FAIL_NEXT if i < n - 1 and r.random() < 0.5 else 0
            out.append((r.choice(ADDRS), fn | (M_RD if rd else 0),
                        r.randint(0, 16) if rd else r.randbytes(r.randint(0, 8))))
        return out

    def stream(self, n_frames: int, clean: bool) -> Sent:
        """``clean``: valid frames only, after a HELLO (then each gets exactly one answer)."""
        r = self.r
        handshake = clean or r.random() < 0.95
        parts = [hello(client="fuzz-long")] if handshake else []
        valid: list[int] = []
        all_valid = handshake
        for rid in range(1, n_frames + 1):
            x = r.random() * (0.6 if clean else 1.0)
            if x < 0.45:
                parts.append(_i2c_frame(rid, r.choice(BUSES), self.msgs(),
                                        r.choice([None, 500])))
                valid.append(rid)
            elif x < 0.55:
                parts.append(_spi_frame(rid, r.choice(BUSES), r.randint(0, 2),
                                        [(r.choice([8, 16, 7]), r.randint(0, 3),
                                          r.randbytes(r.randint(1, 8)), 1_000_000)], None))
                valid.append(rid)
            elif x < 0.60:
                parts.append(frame([6, rid]))
                valid.append(rid)
            elif x < 0.85:
                all_valid = False
                data = bytearray(_i2c_frame(rid, "1", self.msgs(), None))
                for _ in range(r.randint(1, 3)):
                    # Mostly inside the body: a broken prefix ends the stream (tested too).
                    lo = 0 if r.random() < 0.1 else 4
                    data[r.randrange(lo, len(data))] = r.randrange(256)
                parts.append(bytes(data))
            elif x < 0.998:
                all_valid = False
                parts.append(frame(r.randbytes(r.randint(0, 40))))
            else:
                all_valid = False
                parts.append(r.choice([b"\xff\xff\xff\xff", hello()]))  # fatal
        return Sent(b"".join(parts), valid if handshake else [], all_valid)


@pytest.mark.slow
def test_server_long_fuzz(fuzzed: tuple[Running, GoodClient]) -> None:
    running, good = fuzzed
    gen = Generator(seed=int(os.environ.get("BUSBRIDGE_FUZZ_SEED", "7")))
    frames = conns = clean = answers = 0
    t0 = time.monotonic()
    while frames < 300_000 and time.monotonic() - t0 < 240:
        sent = gen.stream(100, clean=conns % 3 == 0)
        replies, closed = _exchange(running, sent.data)
        _check(sent, replies, closed)
        frames += 100
        answers += sum(1 for f in replies if f[0] in ANSWERS)
        conns += 1
        clean += sent.all_valid
        if conns % 100 == 0:
            _serving(running, good)
    _serving(running, good)
    print(f"server fuzz: {frames} frames sent on {conns} connections ({clean} all-valid), "
          f"{answers} answers, in {time.monotonic() - t0:.1f} s, 0 crashes; the good client "
          f"read {good.reads} times, all correct")
    assert frames >= 100_000
    assert answers >= 50_000, "most streams ended early: the generator is too destructive"


# ---------------------------------------------------------------------------
# atheris on the decoder
# ---------------------------------------------------------------------------

FUZZ_DECODER = REPO / "scripts" / "fuzz_decoder.py"
FUZZ_SERVER = REPO / "scripts" / "fuzz_server.py"


def _atheris(script: Path, runs: int, max_len: int, artifacts: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the platform
        why = f"atheris is not importable on Python {sys.version.split()[0]}: {e}"
        if os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    p = subprocess.run([sys.executable, str(script), f"-runs={runs}", f"-max_len={max_len}",
                        "-seed=1", f"-artifact_prefix={artifacts}/"], capture_output=True,
                       text=True, timeout=600, cwd=REPO, check=False)
    out = p.stdout + p.stderr
    # libFuzzer ends with the input's bytes (kilobytes of them): show the Python exception
    # that made the run fail as well as the tail.
    why = out.find("=== Uncaught Python exception")
    shown = (out[why:why + 3000] + "\n...\n" if why >= 0 else "") + out[-3000:]
    assert p.returncode == 0, f"crashing input saved in {artifacts}\n{shown}"
    assert f"Done {runs} runs" in out
    cov = re.findall(r"DONE\s+cov: (\d+)", out)
    print(f"atheris {script.name}: {runs} inputs, 0 crashes, coverage "
          f"{cov[-1] if cov else '?'} edges")


def test_atheris_decoder_short(tmp_path: Path) -> None:
    _atheris(FUZZ_DECODER, 10_000, 2048, tmp_path)


def test_atheris_server_short(tmp_path: Path) -> None:
    _atheris(FUZZ_SERVER, 2_000, 1024, tmp_path)


@pytest.mark.slow
def test_atheris_decoder_long(tmp_path: Path) -> None:
    _atheris(FUZZ_DECODER, 300_000, 2048, tmp_path)


@pytest.mark.slow
def test_atheris_server_long(tmp_path: Path) -> None:
    _atheris(FUZZ_SERVER, 100_000, 1024, tmp_path)
