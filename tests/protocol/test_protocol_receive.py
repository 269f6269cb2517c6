"""``Connection.receive`` (the batch hot path) against ``receive_data``/``next_event``.

Both must see the same stream the same way, however TCP happens to cut it:
the same events in the same order, the same refusals, the same fatal stop.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    NEED_DATA,
    Connection,
    ErrorCode,
    Hello,
    HelloInfo,
    I2CRequest,
    Ping,
    ProtocolError,
    Role,
    encode_body,
    frame,
)
from protocol.virtio import chain, read, write

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _outcome(item: Any) -> tuple[str, Any]:
    if isinstance(item, ProtocolError):
        return ("error", (item.code, item.request_id, item.fatal))
    return ("event", item)


def via_next_event(chunks: list[bytes]) -> list[tuple[str, Any]]:
    conn = Connection(Role.SERVER)
    out: list[tuple[str, Any]] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            try:
                ev = conn.next_event()
            except ProtocolError as e:
                out.append(_outcome(e))
                if e.fatal:
                    return out
                continue
            if ev is NEED_DATA or ev is None:
                break
            out.append(_outcome(ev))
    return out


def via_receive(chunks: list[bytes]) -> list[tuple[str, Any]]:
    conn = Connection(Role.SERVER)
    out: list[tuple[str, Any]] = []
    for chunk in chunks:
        for item in conn.receive(memoryview(bytearray(chunk))):
            out.append(_outcome(item))
            if isinstance(item, ProtocolError) and item.fatal:
                return out
    return out


HELLO = frame(encode_body(Hello(HelloInfo(client="t"))))


def _i2c(rid: int) -> bytes:
    return frame(encode_body(I2CRequest(rid, "1", tuple(chain([write(0x48, b"\x0f"),
                                                               read(0x48, 2)])))))


FRAMES = st.one_of(
    st.integers(1, 200).map(_i2c),
    st.integers(1, 200).map(lambda rid: frame(encode_body(Ping(rid)))),
    st.binary(max_size=12).map(frame),                       # undecodable bodies
    st.just(frame(b"\x93\x02\x05\xa1")),                      # truncated array
)


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(stream)]:
        out.append(stream[last:p])
        last = p
    return [c for c in out if c]


@SETTINGS
@given(st.lists(FRAMES, max_size=12), st.lists(st.integers(0, 10_000), max_size=8))
def test_receive_sees_any_cut_of_the_stream_like_next_event(
        frames: list[bytes], cuts: list[int]) -> None:
    stream = HELLO + b"".join(frames)
    chunks = _cut(stream, cuts)
    assert via_receive(chunks) == via_next_event(chunks)


@SETTINGS
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=30, unique=True),
       st.integers(1, 64))
def test_every_pipelined_request_arrives_once_in_order(ids: list[int], step: int) -> None:
    stream = HELLO + b"".join(_i2c(i) for i in ids)
    conn = Connection(Role.SERVER)
    seen: list[int] = []
    for pos in range(0, len(stream), step):
        for item in conn.receive(stream[pos:pos + step]):
            assert not isinstance(item, ProtocolError), item
            if isinstance(item, I2CRequest):
                seen.append(item.id)
    assert seen == ids


def test_an_over_limit_length_prefix_is_fatal_and_stops_the_batch() -> None:
    conn = Connection(Role.SERVER)
    items = conn.receive(HELLO + struct.pack(">I", 10**9) + b"junk" + _i2c(1))
    assert isinstance(items[0], Hello)
    err = items[-1]
    assert isinstance(err, ProtocolError)
    assert (err.code, err.fatal) == (ErrorCode.FRAME_TOO_LARGE, True)
    assert len(items) == 2  # nothing after the fatal error is decoded


def test_end_of_stream_inside_a_frame_is_reported() -> None:
    conn = Connection(Role.SERVER)
    assert conn.receive(HELLO + _i2c(1)[:7]) != []
    (err,) = conn.receive(b"")
    assert isinstance(err, ProtocolError)
    assert err.fatal
    assert "inside a frame" in err.message


def test_a_refused_frame_does_not_pin_the_callers_buffer() -> None:
    # The hot path decodes straight from the transport's buffer; a kept error
    # must not hold a view of it (the buffer is reused for the next read).
    conn = Connection(Role.SERVER)
    buf = bytearray(HELLO + frame(b"\xc1"))  # 0xc1 is never valid msgpack
    items = conn.receive(memoryview(buf))
    err = items[-1]
    assert isinstance(err, ProtocolError)
    assert err.code is ErrorCode.MALFORMED
    buf.extend(b"more")  # resizing fails while any memoryview export is alive
