"""Why request frames are msgpack arrays with hand checks, not maps with pydantic.

Measures, in one run on this machine, the per-round-trip codec cost (client
encodes a register-read request, server decodes it, server encodes the RESULT,
client decodes it) for:

* the shipped codec (``protocol.codec`` through a ``Connection``: arrays + hand checks),
* the same content as msgpack maps validated by pydantic models and turned
  into the same events (fewer checks than the shipped codec: no limits, no
  in-flight tracking),
* bare msgpack arrays with no validation at all (the floor).

Run: ``python benchmarks/frame_codec.py`` (prints medians of 7 repetitions).
"""

from __future__ import annotations

import statistics
import timeit

import msgpack
from pydantic import BaseModel, Field

from protocol import (
    DEFAULT_LIMITS,
    Connection,
    Hello,
    HelloInfo,
    I2CMsg,
    I2CRequest,
    LimitsInfo,
    Result,
    Role,
    Welcome,
    WelcomeInfo,
    chain,
    read,
    write,
)
from protocol.codec import frame

N = 20_000
REPS = 7


def shipped() -> float:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive(client.send(Hello(HelloInfo(client="frame_codec"))))
    client.receive(server.send(
        Welcome(WelcomeInfo(limits=LimitsInfo(**DEFAULT_LIMITS.as_dict())))))
    msgs = tuple(chain([write(0x48, b"\x00"), read(0x48, 2)]))
    ids = iter(range(1, 10**9))

    def once() -> None:
        rid = next(ids)
        server.receive_data(client.send(I2CRequest(rid, "1", msgs)))
        req = server.next_event()
        assert isinstance(req, I2CRequest)
        client.receive_data(server.send(Result(rid, b"\x00\x00", [b"\x0c\x80"])))
        client.next_event()

    return _time(once)


class MsgModel(BaseModel):
    out_hdr: bytes = Field(min_length=8, max_length=8)
    buf: bytes | int


class ReqModel(BaseModel):
    type: int
    id: int = Field(gt=0)
    bus: str = Field(min_length=1, max_length=64)
    msgs: list[MsgModel] = Field(min_length=1, max_length=64)


class ResModel(BaseModel):
    type: int
    id: int
    status: bytes
    reads: list[bytes]
    failures: list[list[int | str]]


def maps_pydantic() -> float:
    hdr_w = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (1).to_bytes(4, "little")
    hdr_r = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (2).to_bytes(4, "little")

    def once() -> None:
        req = {"type": 2, "id": 1, "bus": "1",
               "msgs": [{"out_hdr": hdr_w, "buf": b"\x00"}, {"out_hdr": hdr_r, "buf": 2}]}
        wire = frame(msgpack.packb(req))
        m = ReqModel.model_validate(msgpack.unpackb(wire[4:]))
        # The same end product as the shipped codec: events the server can run.
        I2CRequest(m.id, m.bus, tuple(I2CMsg.from_out_hdr(x.out_hdr, x.buf) for x in m.msgs))
        res = {"type": 4, "id": 1, "status": b"\x00\x00", "reads": [b"\x0c\x80"], "failures": []}
        wire = frame(msgpack.packb(res))
        r = ResModel.model_validate(msgpack.unpackb(wire[4:]))
        Result(r.id, r.status, r.reads, [])

    return _time(once)


def arrays_unchecked() -> float:
    hdr_w = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (1).to_bytes(4, "little")
    hdr_r = (0x48 << 1).to_bytes(2, "little") + bytes(2) + (2).to_bytes(4, "little")

    def once() -> None:
        wire = frame(msgpack.packb([2, 1, "1", [[hdr_w, b"\x00"], [hdr_r, 2]], None]))
        msgpack.unpackb(wire[4:])
        wire = frame(msgpack.packb([4, 1, b"\x00\x00", [b"\x0c\x80"], []]))
        msgpack.unpackb(wire[4:])

    return _time(once)


def _time(fn: object) -> float:
    runs = [timeit.timeit(fn, number=N) / N for _ in range(REPS)]  # type: ignore[arg-type]
    return statistics.median(runs)


def main() -> None:
    floor = arrays_unchecked()
    ours = shipped()
    maps = maps_pydantic()
    print(f"{'codec (request + result round trip)':44} {'µs':>7} {'× floor':>8}")
    for name, t in (("msgpack arrays, no checks (floor)", floor),
                    ("shipped: arrays + hand checks + state", ours),
                    ("msgpack maps + pydantic validation", maps)):
        print(f"{name:44} {t * 1e6:7.2f} {t / floor:8.2f}")


if __name__ == "__main__":
    main()
