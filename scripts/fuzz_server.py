"""Coverage-guided fuzzing (atheris / libFuzzer) of the server's request handling.

A real :class:`bridge.server.Server` on the default simulated board listens on
127.0.0.1 (its own thread and asyncio loop).  Each input is one TCP
connection: a HELLO (unless the first byte's low bit is set), the rest of the
input as the byte stream, then a half-close; the reply is read until the
server closes.  Coverage comes from the server, the executor, the simulated
buses and the protocol package.

A crash is: the server not closing the connection within 30 s, a reply that is
not a sequence of well-formed frames, an exception escaping into the event
loop, an ERROR-level log record (a backend or encoder raising), or the
well-behaved check (the TMP117 ID register read over a second connection,
every 500 inputs) failing.  Run with the compiled build (``PYTHONPATH`` at
scripts/build_compiled.sh's copy), the server decodes its common I2C frames with
the C decoder (``protocol/_native.c``); the start says whether it is in use.

    python scripts/fuzz_server.py -runs=20000
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import atheris
import msgpack
from fuzz_main import fuzz

with atheris.instrument_imports(include=["protocol", "bridge.server",
                                         "bridge.buses.sim"]):
    from bridge.config import load_board
    from bridge.server import Server
    from protocol import (
        Connection,
        Hello,
        HelloInfo,
        I2CRequest,
        Ping,
        Role,
        SpiRequest,
        SpiTransfer,
        SpiTransferHead,
        chain,
        encode_body,
        frame,
        read,
        write,
    )
    from protocol.accel import NATIVE

PROBLEMS: list[str] = []
COUNT = {"inputs": 0, "replies": 0}


class _Errors(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        PROBLEMS.append(f"log {record.levelname}: {record.getMessage()}")


def _start() -> tuple[str, int]:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _l, ctx: PROBLEMS.append(f"loop: {ctx.get('message')} "
                                                               f"{ctx.get('exception')!r}"))
    ready = threading.Event()
    holder: dict[str, Server] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            s = Server(load_board(None), host="127.0.0.1", port=0, request_timeout=0.5)
            await s.start()
            holder["s"] = s
            ready.set()
            await s.serve_forever()

        loop.run_until_complete(main())

    threading.Thread(target=run, name="fuzz-server", daemon=True).start()
    if not ready.wait(10):
        raise SystemExit("server did not start")
    logging.getLogger("busbridge").addHandler(_Errors(logging.ERROR))
    return holder["s"].host, holder["s"].port


#: Every frame type a server may send (SPEC §4): WELCOME, RESULT, ERROR, PING, PONG,
#: LEASE_RESULT, ADMIN_RESULT, EVENT.
SERVER_FRAMES = (1, 4, 5, 6, 7, 9, 11, 12)

HOST, PORT = _start()
HELLO = frame(encode_body(Hello(HelloInfo(client="fuzz-server"))))


def _exchange(data: bytes) -> bytes:
    # 30 s: generous on a busy 2-core machine; a stalled server still fails.
    with socket.create_connection((HOST, PORT), 30) as s:
        s.settimeout(30)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError("the server did not close the connection in 30 s") from None
            if not chunk:
                break
            out += chunk
        return bytes(out)


def _frames(data: bytes) -> int:
    pos = n = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise AssertionError("reply ends inside a length prefix")
        size = int.from_bytes(data[pos : pos + 4], "big")
        body = data[pos + 4 : pos + 4 + size]
        if len(body) != size:
            raise AssertionError("reply ends inside a frame")
        f = msgpack.unpackb(body)
        if type(f) is not list or f[0] not in SERVER_FRAMES:
            raise AssertionError(f"unexpected reply frame {f!r}")
        pos += 4 + size
        n += 1
    return n


def _well_behaved() -> None:
    conn = Connection(Role.CLIENT)
    # Its own 30 s deadline: the server's 0.5 s default (short, so that fuzzed requests
    # time out quickly) is missed on a busy machine, and that is no fault of the server.
    req = I2CRequest(1, "1", tuple(chain([write(0x48, [0x0F]), read(0x48, 2)])), 30_000)
    data = _exchange(HELLO + conn.send(req))
    conn.receive_data(data)
    events = list(conn.events())
    if len(events) < 2 or getattr(events[1], "reads", None) != [b"\x01\x17"]:
        raise AssertionError(f"the well-behaved request got {events!r}")


def one_input(data: bytes) -> None:
    COUNT["inputs"] += 1
    stream = data[1:] if data and data[0] & 1 else HELLO + data[1:]
    COUNT["replies"] += _frames(_exchange(stream))
    if COUNT["inputs"] % 500 == 0:
        _well_behaved()
    if COUNT["inputs"] % 5000 == 0:
        print(f"fuzz_server: {COUNT['inputs']} inputs, {COUNT['replies']} reply frames, "
              "0 crashes so far", flush=True)
    if PROBLEMS:
        raise AssertionError("; ".join(PROBLEMS))


def _seeds() -> list[bytes]:
    head = SpiTransferHead(0, 8, 0, 0, 0, 0, 1_000_000, 0, 0, 0, 0)
    evs: list[Any] = [
        I2CRequest(1, "1", tuple(chain([write(0x48, [0x0F]), read(0x48, 2)])), None),
        I2CRequest(2, "1", (write(0x50, [0, 0, 1, 2]), read(0x51, 1)), 100),
        I2CRequest(3, "2", tuple(chain([write(0x18, [5]), read(0x18, 2)])), None),
        SpiRequest(4, "0", 0, (SpiTransfer(head, b"\x9f\x00\x00\x00", 4),), None),
        SpiRequest(5, "0", 1, (SpiTransfer(head, b"\x01\x02", 2),), None),
        Ping(6),
    ]
    conn = Connection(Role.CLIENT)
    return [b"\x00" + conn.send(ev) for ev in evs] + [b"\x01" + HELLO]


def main() -> None:
    print(f"fuzz_server: the C frame decoder is {'in use' if NATIVE else 'not built'}",
          flush=True)
    fuzz(one_input, _seeds(), "fuzz-server")


if __name__ == "__main__":
    main()
