"""A client process for the fault suite to SIGKILL at a chosen moment.

Modes (``python doomed_client.py HOST PORT MODE``):

* ``queued``: one chain that lands on a stalling device (so it holds the bus),
  then ``QUEUED`` more chains behind it, each writing the marker register;
  prints ``READY`` once every frame has been written to the socket.
* ``stalled-reader``: 24 MiB of pipelined reads it never reads the answers of.
* ``partial``: a handshake, then the first half of a chain's frame; ``READY``.

Then it sleeps (bounded) until killed.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time

from bridge.client import AsyncClient
from protocol import Connection, Hello, HelloInfo, I2CMsg, I2CRequest, Role, chain, read, write

#: Registers of the TMP117-style device at 0x48 on the default board's bus 1.
TMP117, THIGH, TLOW = 0x48, 0x02, 0x03
#: The EEPROM at 0x50 on the same bus; the test makes it stall.
STALLER = 0x50
QUEUED = 6
LIFETIME_S = 30.0


def marker_chain(i: int) -> list[I2CMsg]:
    """A FAIL_NEXT chain of the doomed client: it must never reach the bus."""
    return chain([write(TMP117, [TLOW, 0xD0, i]), write(TMP117, [THIGH, 0xD0, i])])


async def queued(host: str, port: int) -> None:
    c = await AsyncClient.connect(host, port, timeout=LIFETIME_S)
    # On the bus first: a chain whose middle message stalls; then the queue.
    first = chain([write(TMP117, [TLOW, 0xC0, 0xFF]), write(STALLER, [0, 0]),
                   write(TMP117, [THIGH, 0xC0, 0xFF])])
    tasks = [asyncio.ensure_future(c.i2c("1", first, timeout=LIFETIME_S))]
    await asyncio.sleep(0.05)
    tasks += [asyncio.ensure_future(c.i2c("1", marker_chain(i), timeout=LIFETIME_S))
              for i in range(QUEUED)]
    await asyncio.sleep(0.05)  # let the pipelined frames go out
    print("READY", flush=True)
    await asyncio.sleep(LIFETIME_S)


async def stalled_reader(host: str, port: int) -> None:
    """Pipeline 100 frames of 60 reads of 4 KiB; the test SIGSTOPs us before we read them."""
    c = await AsyncClient.connect(host, port, timeout=LIFETIME_S)
    big = [read(STALLER, 4096)] * 60
    tasks = [asyncio.ensure_future(c.i2c("1", big, timeout=LIFETIME_S)) for _ in range(100)]
    await asyncio.sleep(0.05)
    print("READY", flush=True)
    await asyncio.wait(tasks, timeout=LIFETIME_S)


def partial(host: str, port: int) -> None:
    conn = Connection(Role.CLIENT)
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(conn.send(Hello(HelloInfo(client="doomed-partial"))))
    s.recv(65536)  # WELCOME
    data = conn.send(I2CRequest(1, "1", tuple(marker_chain(0xAA)), None))
    s.sendall(data[: len(data) // 2])
    print("READY", flush=True)
    time.sleep(LIFETIME_S)


if __name__ == "__main__":
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "queued":
        asyncio.run(queued(host, port))
    elif mode == "stalled-reader":
        asyncio.run(stalled_reader(host, port))
    else:
        partial(host, port)
