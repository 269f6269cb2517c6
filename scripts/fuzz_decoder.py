"""Coverage-guided fuzzing (atheris / libFuzzer) of the sans-I/O frame decoder.

Every input is split by its first byte into a role (server or client), a
handshake state and up to three chunks, fed to a fresh
:class:`protocol.Connection`, and drained with an EOF at the end.  A crash is
any exception other than :class:`protocol.ProtocolError`, a decoded event
that does not encode back to itself, a connection that neither progresses
nor stops, or, where the compiled build's C decoder is built
(``protocol/_native.c``), a server that decodes the input otherwise with it
than without it (events, refusals, ids in flight, state).

    python scripts/fuzz_decoder.py -runs=100000            # the long suite's run
    python scripts/fuzz_decoder.py -max_total_time=60 CORPUS_DIR

libFuzzer flags pass through; without a corpus directory the run starts from
seeds built here (one valid frame of each type).  Every 25 000 inputs it
prints ``fuzz_decoder: N inputs, E events, P protocol errors, 0 crashes so
far``; libFuzzer ends with ``Done N runs`` and exit status 0, or reports the
crashing input and exits non-zero.
"""

from __future__ import annotations

import atheris
from fuzz_main import fuzz

with atheris.instrument_imports(include=["protocol"]):
    from protocol import (
        NEED_DATA,
        Connection,
        Error,
        ErrorCode,
        Failure,
        Hello,
        HelloInfo,
        I2CRequest,
        LimitsInfo,
        Ping,
        ProtocolError,
        Result,
        Role,
        SpiRequest,
        SpiTransfer,
        SpiTransferHead,
        Welcome,
        WelcomeInfo,
        chain,
        encode_body,
        frame,
        read,
        write,
    )
    from protocol.accel import NATIVE
    from protocol.limits import Limits

# Small limits make every limit check reachable with short inputs.
LIMITS = Limits(max_frame=4096, max_requests=8, max_i2c_len=64, max_spi_len=64, max_in_flight=4)
COUNTS = {"inputs": 0, "events": 0, "protocol_errors": 0}


def _seeds() -> list[bytes]:
    head = SpiTransferHead(0, 8, 0, 0, 0, 0, 1_000_000, 0, 0, 0, 0)
    evs = [
        Hello(HelloInfo(client="fuzz")),
        I2CRequest(1, "1", tuple(chain([write(0x48, [0x0F]), read(0x48, 2)])), 250),
        SpiRequest(2, "0", 0, (SpiTransfer(head, b"\x9f\x00", 2),), None),
        Result(1, b"\x00\x01", [b"\x01\x17"], [Failure(1, 6, "no ACK")]),
        Error(3, ErrorCode.UNKNOWN_BUS, "no I2C bus '9'"),
        Ping(4),
    ]
    out = []
    for role_byte, ev in zip((0, 1, 1, 3, 3, 1), evs, strict=True):
        out.append(bytes([role_byte]) + frame(encode_body(ev)))
    return out


# What a real peer writes first: a connection is put in a state only by real frames.
_HELLO = Connection(Role.CLIENT).send(Hello(HelloInfo(client="fuzz")))
_WELCOME = Connection(Role.SERVER).send(Welcome(WelcomeInfo(
    limits=LimitsInfo(**LIMITS.as_dict()))))


def _handshake(conn: Connection) -> None:
    conn.receive(_HELLO if conn.role is Role.SERVER else _WELCOME)


def _send_requests(client: Connection, ids: range) -> None:
    for rid in ids:
        client.send(I2CRequest(rid, "1", (write(0x48),)))


def _reencodes(ev: object, role: Role) -> None:
    conn = Connection(role, LIMITS)
    if not isinstance(ev, Hello | Welcome):
        _handshake(conn)
    rid = getattr(ev, "id", 0)
    if isinstance(ev, Result | Error) and rid:
        _send_requests(conn, range(rid, rid + 1))
    conn.receive_data(frame(encode_body(ev)))  # type: ignore[arg-type]
    back = conn.next_event()
    if back != ev:
        raise AssertionError(f"{ev!r} re-decoded as {back!r}")


def _seen(items: list[object]) -> list[object]:
    return [(e.code, e.message, e.request_id, e.fatal) if isinstance(e, ProtocolError) else e
            for e in items]


def _same_without_c(ctl: int, chunks: list[bytes]) -> None:
    """A server decodes the chunks alike with the C decoder and without it."""
    fast, pure = Connection(Role.SERVER, LIMITS), Connection(Role.SERVER, LIMITS)
    pure._feed = None
    for conn in (fast, pure) if ctl & 2 else ():
        _handshake(conn)
    for chunk in [c for c in chunks if c] + [b""]:
        if fast.closed:
            break
        a, b = _seen(list(fast.receive(chunk))), _seen(list(pure.receive(chunk)))
        if a != b or fast.in_flight != pure.in_flight or fast.state is not pure.state:
            raise AssertionError(f"with the C decoder {a!r}, without {b!r}")


def one_input(data: bytes) -> None:
    COUNTS["inputs"] += 1
    if COUNTS["inputs"] % 25_000 == 0:
        _summary()
    if not data:
        return
    ctl, body = data[0], data[1:]
    role = Role.CLIENT if ctl & 1 else Role.SERVER
    conn = Connection(role, LIMITS)
    if ctl & 2:
        _handshake(conn)
    if role is Role.CLIENT:
        _send_requests(conn, range(1, 8))
    cuts = sorted({(ctl >> 2) % (len(body) + 1), (ctl >> 5) * 7 % (len(body) + 1)})
    chunks = [body[: cuts[0]], body[cuts[0] : cuts[-1]], body[cuts[-1] :]]
    if NATIVE and role is Role.SERVER:
        _same_without_c(ctl, chunks)
    for chunk in [c for c in chunks if c] + [b""]:
        conn.receive_data(chunk)
        for _ in range(len(body) // 4 + 2):  # each step consumes a frame or stops
            try:
                ev = conn.next_event()
            except ProtocolError as e:
                COUNTS["protocol_errors"] += 1
                if not isinstance(e.code, ErrorCode):
                    raise AssertionError(f"error code {e.code!r} is not an ErrorCode") from None
                if e.fatal:
                    if not conn.closed:
                        raise AssertionError("a fatal error left the connection open") from None
                    return
                continue
            if ev is None or ev is NEED_DATA:
                break
            COUNTS["events"] += 1
            _reencodes(ev, role)
        else:
            raise AssertionError("next_event neither progressed nor stopped")


def _summary() -> None:
    print(f"fuzz_decoder: {COUNTS['inputs']} inputs, {COUNTS['events']} events, "
          f"{COUNTS['protocol_errors']} protocol errors, 0 crashes so far", flush=True)


def main() -> None:
    how = "built: compared with" if NATIVE else "not built: only"
    print(f"fuzz_decoder: the C decoder is {how} the pure path", flush=True)
    fuzz(one_input, _seeds(), "fuzz")


if __name__ == "__main__":
    main()
