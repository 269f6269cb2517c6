"""The local agent: answers the preload library's requests with busbridge calls.

``busbridge run`` starts it beside the command: a Unix socket in a fresh
directory only the user can enter (and a peer-credential check on top), named
to the command by ``BUSBRIDGE_NATIVE_SOCKET``.  Each process of the command
connects once (a forked child opens its own connection) and sends one request
at a time; every connection has a thread, and bus calls go through
:class:`~bridge.native.link.ClientPool`'s pool.  The state the kernel keeps per
adapter (I2C_TIMEOUT) or per SPI device (mode, word size, speed) lives here,
so every process of the command sees the same, as with the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Mapping

from ..dropin.session import BusMap
from ..env import MAP as ENV_MAP
from . import wire
from .i2cdev import I2C_M_RD, I2cAdapter, Msg
from .link import ClientPool
from .spidev import SpidevNode, Xfer

log = logging.getLogger("busbridge.native")

Device = I2cAdapter | SpidevNode


class Agent:
    """The devices of one ``busbridge run`` and the requests on them."""

    def __init__(self, link: ClientPool, bus_map: BusMap) -> None:
        self.link = link
        self.map = bus_map
        self._lock = threading.Lock()
        self._devices: list[Device] = []
        self._by_key: dict[tuple[str, str, int], int] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Agent:
        return cls(ClientPool(env), BusMap.parse([env.get(ENV_MAP, "")]))

    # -- devices ------------------------------------------------------------

    def _handle(self, key: tuple[str, str, int], make: Callable[[], Device]) -> int:
        with self._lock:
            h = self._by_key.get(key)
            if h is None:
                self._devices.append(make())
                h = self._by_key[key] = len(self._devices) - 1
            return h

    def device(self, handle: int) -> Device:
        with self._lock:
            if not 0 <= handle < len(self._devices):
                raise OSError(errno.EBADF, "no such device handle")
            return self._devices[handle]

    def open_i2c(self, local: int) -> tuple[int, int]:
        """(handle, I2C_FUNCS) of /dev/i2c-<local>; ENOENT when the board has no such bus."""
        name = self.map.remote("i2c", local)
        info = self.link.welcome().i2c_bus(name)
        if info is None:
            raise OSError(errno.ENOENT, f"no i2c bus {name!r} on the board")
        h = self._handle(("i2c", name, 0), lambda: I2cAdapter(self.link, info))
        return h, info.functionality

    def open_spi(self, local: int, cs: int) -> tuple[int, int]:
        """(handle, bufsiz) of /dev/spidev<local>.<cs>; ENOENT without that bus or chip select."""
        name = self.map.remote("spi", local)
        info = self.link.welcome().spi_bus(name)
        if info is None or cs >= info.config.cs_max_number:
            raise OSError(errno.ENOENT, f"no spi bus {name!r} chip select {cs} on the board")
        h = self._handle(("spi", name, cs), lambda: SpidevNode(self.link, info, cs))
        dev = self.device(h)
        assert isinstance(dev, SpidevNode)
        dev.opened()
        return h, dev.bufsiz

    def close(self, handle: int) -> None:
        dev = self.device(handle)
        if isinstance(dev, SpidevNode):
            dev.released()

    # -- requests ------------------------------------------------------------

    def dispatch(self, op: int, handle: int, body: bytes, opened: Counter[int]) -> bytes:
        """One request; the answer's data (the result comes from the return or an OSError)."""
        if op == wire.OP_OPEN_I2C:
            (bus,) = wire.OPEN_I2C.unpack_from(body)
            h, funcs = self.open_i2c(bus)
            return wire.OPENED.pack(h, funcs)
        if op == wire.OP_OPEN_SPI:
            bus, cs = wire.OPEN_SPI.unpack_from(body)
            h, bufsiz = self.open_spi(bus, cs)
            opened[h] += 1
            return wire.OPENED.pack(h, bufsiz)
        if op == wire.OP_CLOSE:
            if opened[handle] > 0:  # only what this connection opened (docs/native.md)
                opened[handle] -= 1
                self.close(handle)
            return b""
        dev = self.device(handle)
        if isinstance(dev, I2cAdapter):
            return self._i2c(dev, op, body)
        return self._spi(dev, op, body)

    def _i2c(self, dev: I2cAdapter, op: int, body: bytes) -> bytes:
        if op == wire.OP_I2C_XFER:
            (n,) = wire.XFER_COUNT.unpack_from(body)
            at = wire.XFER_COUNT.size
            msgs = []
            for _ in range(n):
                addr, flags, length = wire.XFER_MSG.unpack_from(body, at)
                msgs.append(Msg(addr, flags, length))
                at += wire.XFER_MSG.size
            for m in msgs:
                if not m.flags & I2C_M_RD:
                    m.data = body[at : at + m.length]
                    at += m.length
            done, data = dev.transfer(msgs)
            out = bytearray(wire.RES.pack(done))
            for m, d in zip(msgs[:done], data, strict=False):
                if m.flags & I2C_M_RD:
                    out += wire.READ_LEN.pack(len(d)) + d
            return bytes(out)
        if op == wire.OP_I2C_SMBUS:
            addr, flags, rw, command, has_data, size, raw = wire.SMBUS.unpack_from(body)
            union = bytearray(raw) if has_data else None
            dev.smbus_xfer(addr, flags, rw, command, size, union)
            return wire.RES.pack(0) + bytes(union if union is not None else raw)
        if op == wire.OP_I2C_SET:
            cmd, _pad, value = wire.I2C_SET.unpack_from(body)
            dev.set(cmd, value)
            return wire.RES.pack(0)
        raise OSError(errno.ENOTTY, f"operation {op} is not for an i2c device")

    def _spi(self, dev: SpidevNode, op: int, body: bytes) -> bytes:
        if op == wire.OP_SPI_MSG:
            (n,) = wire.XFER_COUNT.unpack_from(body)
            size = wire.SPI_IOC_TRANSFER.size
            at = wire.XFER_COUNT.size + n * size
            xfers = []
            for i in range(n):
                raw = body[wire.XFER_COUNT.size + i * size : wire.XFER_COUNT.size + (i + 1) * size]
                has_tx = wire.SPI_IOC_TRANSFER.unpack(raw)[0]
                length = wire.SPI_IOC_TRANSFER.unpack(raw)[2]
                tx = body[at : at + length] if has_tx else None
                at += length if has_tx else 0
                xfers.append(Xfer.unpack(raw, tx))
            total, rx = dev.message(xfers)
            return wire.RES.pack(total) + b"".join(rx)
        if op == wire.OP_SPI_RW:
            direction, count = wire.SPI_RW.unpack_from(body)
            if direction == 0:
                data = dev.read(count)
                return wire.RES.pack(len(data)) + data
            return wire.RES.pack(dev.write(body[wire.SPI_RW.size : wire.SPI_RW.size + count]))
        if op == wire.OP_SPI_GET:
            return wire.RES.pack(0) + wire.SPI_STATE.pack(*dev.state())
        if op == wire.OP_SPI_SET:
            what, value = wire.SPI_SET.unpack_from(body)
            dev.set(what, value)
            return wire.RES.pack(0)
        raise OSError(errno.ENOTTY, f"operation {op} is not for an spi device")

    def answer(self, op: int, handle: int, body: bytes, opened: Counter[int]) -> bytes | None:
        """The framed reply to one request (None for the operations that have none)."""
        try:
            data = self.dispatch(op, handle, body, opened)
            if op in wire.NO_REPLY:
                return None
            if op in (wire.OP_OPEN_I2C, wire.OP_OPEN_SPI):
                data = wire.RES.pack(0) + data
        except OSError as e:
            if op in wire.NO_REPLY:
                return None
            data = wire.RES.pack(-(e.errno or errno.EIO))
        except (struct.error, ValueError, IndexError) as e:  # a library of another version
            log.warning("native agent: malformed request (op %d): %s", op, e)
            if op in wire.NO_REPLY:
                return None
            data = wire.RES.pack(-errno.EINVAL)
        return wire.LEN.pack(len(data)) + data

    # -- serving -------------------------------------------------------------

    def serve_connection(self, conn: socket.socket) -> None:
        opened: Counter[int] = Counter()
        try:
            while True:
                head = _recv_exact(conn, wire.LEN.size)
                if head is None:
                    return
                (length,) = wire.LEN.unpack(head)
                if not wire.HEAD.size <= length <= wire.MAX_REQUEST:
                    log.warning("native agent: request of %d bytes refused", length)
                    return
                frame = _recv_exact(conn, length)
                if frame is None:
                    return
                op, handle = wire.HEAD.unpack_from(frame)
                reply = self.answer(op, handle, frame[wire.HEAD.size :], opened)
                if reply is not None:
                    conn.sendall(reply)
        except OSError:
            return
        finally:
            conn.close()
            self.link.done()
            for h, n in opened.items():  # the process ended with descriptors open
                for _ in range(n):
                    with contextlib.suppress(OSError):
                        self.close(h)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:])
        if not k:
            return None
        got += k
    return bytes(buf)


class Listener:
    """The private socket and its accept thread."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.dir = tempfile.mkdtemp(prefix="busbridge-native-")  # mode 0700
        self.path = os.path.join(self.dir, "agent.sock")
        if len(self.path.encode()) >= 100:  # sun_path holds 108 bytes; a long $TMPDIR
            os.rmdir(self.dir)
            self.dir = tempfile.mkdtemp(prefix="busbridge-native-", dir="/tmp")
            self.path = os.path.join(self.dir, "agent.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self._uid = os.getuid()
        self._thread = threading.Thread(target=self._accept, name="native-agent", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != self._uid and uid != 0:
                conn.close()
                continue
            threading.Thread(target=self.agent.serve_connection, args=(conn,),
                             name="native-conn", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)
