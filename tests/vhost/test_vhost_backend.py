"""The vhost-user agent against a fake QEMU front end and a real server on the simulated board.

The front end below speaks vhost-user over the agent's real unix socket, shares a
memfd as guest RAM, builds split-ring descriptor chains (direct and indirect),
kicks and waits on real eventfds, and reads the used ring back: what QEMU and
the guest's driver do, minus the virtual machine.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Running, start_server_thread, stop_server_thread

from bridge.config import board_from_toml_text, load_board
from bridge.runtime import new_event_loop
from bridge.server import Server
from bridge.vhost import messages as vu
from bridge.vhost.agent import run_agent
from bridge.vhost.messages import Req
from protocol.virtio import I2C_FLAGS_FAIL_NEXT, I2C_FLAGS_M_RD, SpiConfig, SpiTransferHead

GPA = 0x4000_0000  # guest-physical base of the fake RAM
UVA = 0x7F12_3400_0000  # where "QEMU" has it mapped
RAM = 1 << 20
DESC, AVAIL, USED = 0x0000, 0x2000, 0x3000
TABLES, BUFS = 0x8000, 0x20000
NEXT, WRITE, INDIRECT = 1, 2, 4
OK, ERR = 0, 1
FEATURES = vu.F_VERSION_1 | vu.F_PROTOCOL_FEATURES | vu.F_INDIRECT_DESC | vu.F_EVENT_IDX

Seg = bytes | int  # readable data, or the length of a device-writable buffer


@dataclass
class Sent:
    head: int
    writable: list[tuple[int, int]]  # (offset in RAM, length)


class FrontEnd:
    """QEMU's half of vhost-user plus the guest driver's half of the ring."""

    def __init__(self, path: str, qsize: int = 8, event_idx: bool = True,
                 features: int | None = None) -> None:
        self.qsize = qsize
        self.event_idx = event_idx
        self.fd = os.memfd_create("fake-guest-ram")
        os.ftruncate(self.fd, RAM)
        self.mm = mmap.mmap(self.fd, RAM)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(15)
        self.sock.connect(path)
        self.kick = os.eventfd(0, os.EFD_NONBLOCK)
        self.call = os.eventfd(0, os.EFD_NONBLOCK)
        self.avail_idx = 0
        self.used_seen = 0
        self.next_desc = 0
        self.table_at = TABLES
        self.buf_at = BUFS
        self.features = FEATURES if features is None else features
        if not event_idx:
            self.features &= ~vu.F_EVENT_IDX

    def close(self) -> None:
        self.sock.close()
        os.close(self.kick)
        os.close(self.call)
        self.mm.close()
        os.close(self.fd)

    # -- vhost-user ------------------------------------------------------------

    def send(self, req: int, payload: bytes = b"", fds: tuple[int, ...] = (),
             need_reply: bool = False) -> None:
        flags = vu.VERSION | (vu.FLAG_NEED_REPLY if need_reply else 0)
        data = vu.header(req, flags, len(payload)) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] \
            if fds else []
        self.sock.sendmsg([data], anc)

    def reply(self, req: int) -> bytes:
        head = self._recv(vu.HEADER_SIZE)
        r, flags, size = vu.HEADER.unpack(head)
        assert (r, flags) == (req, vu.VERSION | vu.FLAG_REPLY)
        return self._recv(size)

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "back end closed the socket"
            buf += chunk
        return buf

    def call_u64(self, req: int, payload: bytes = b"") -> int:
        self.send(req, payload)
        return int(vu.U64.unpack(self.reply(req))[0])

    def ack(self, req: int, payload: bytes = b"", fds: tuple[int, ...] = ()) -> int:
        self.send(req, payload, fds, need_reply=True)
        return int(vu.U64.unpack(self.reply(req))[0])

    def region(self) -> vu.Region:
        return vu.Region(GPA, RAM, UVA, 0)

    def connect_start(self) -> None:
        """What QEMU 7.2 sends when the device is realized."""
        offered = self.call_u64(Req.GET_FEATURES)
        proto = self.call_u64(Req.GET_PROTOCOL_FEATURES)
        self.send(Req.SET_PROTOCOL_FEATURES, vu.U64.pack(proto & ~vu.PF_CONFIGURE_MEM_SLOTS))
        assert self.call_u64(Req.GET_QUEUE_NUM) == 1
        self.send(Req.SET_OWNER)
        assert self.call_u64(Req.GET_FEATURES) == offered
        self.send(Req.SET_VRING_CALL, vu.U64.pack(0), (self.call,))
        self.send(Req.SET_VRING_ERR, vu.U64.pack(0), (self.call,))

    def driver_ok(self, base: int = 0, *, add_mem_reg: bool = False) -> None:
        """What QEMU sends when the guest driver sets DRIVER_OK."""
        assert self.ack(Req.SET_FEATURES, vu.U64.pack(self.features)) == 0
        if add_mem_reg:
            assert self.ack(Req.ADD_MEM_REG, vu.U64.pack(0) + self.region().pack(),
                            (self.fd,)) == 0
        else:
            assert self.ack(Req.SET_MEM_TABLE, vu.mem_table([self.region()]), (self.fd,)) == 0
        self.send(Req.SET_VRING_NUM, vu.VRING_STATE.pack(0, self.qsize))
        self.send(Req.SET_VRING_BASE, vu.VRING_STATE.pack(0, base))
        self.send(Req.SET_VRING_ADDR, vu.VringAddr(0, 0, UVA + DESC, UVA + USED,
                                                   UVA + AVAIL, 0).pack())
        self.send(Req.SET_VRING_KICK, vu.U64.pack(0), (self.kick,))
        self.send(Req.SET_VRING_ENABLE, vu.VRING_STATE.pack(0, 1))
        self.send(Req.SET_VRING_CALL, vu.U64.pack(0), (self.call,))
        # A round trip so every message above has been handled.
        assert self.call_u64(Req.GET_FEATURES)

    def start(self, **kw: bool) -> FrontEnd:
        self.connect_start()
        self.driver_ok(**kw)
        return self

    def stop_ring(self) -> int:
        self.send(Req.SET_VRING_ENABLE, vu.VRING_STATE.pack(0, 0))
        self.send(Req.GET_VRING_BASE, vu.VRING_STATE.pack(0, 0))
        index, num = vu.VRING_STATE.unpack(self.reply(Req.GET_VRING_BASE))
        assert index == 0
        return num

    # -- the guest driver's side of the ring -------------------------------------

    def alloc(self, n: int) -> int:
        at = self.buf_at
        self.buf_at += (n + 15) & ~15
        assert self.buf_at < RAM
        return at

    def put_desc(self, base: int, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        struct.pack_into("<QIHH", self.mm, base + 16 * i, addr, length, flags, nxt)

    def chain(self, segs: list[Seg], *, indirect: bool = True, raw: list[tuple[int, int, int]]
              | None = None) -> Sent:
        """Queue one request; ``raw`` gives (gpa, len, flags) descriptors verbatim."""
        descs: list[tuple[int, int, int]] = []
        writable: list[tuple[int, int]] = []
        for s in segs:
            if isinstance(s, int):
                at = self.alloc(s)
                self.mm[at:at + s] = b"\xee" * s
                descs.append((GPA + at, s, WRITE))
                writable.append((at, s))
            else:
                at = self.alloc(len(s))
                self.mm[at:at + len(s)] = s
                descs.append((GPA + at, len(s), 0))
        if raw is not None:
            descs = raw
        head = self.next_desc % self.qsize
        if indirect:
            table = self.table_at
            self.table_at += 16 * len(descs)
            for i, (addr, length, flags) in enumerate(descs):
                last = i == len(descs) - 1
                self.put_desc(table, i, addr, length, flags | (0 if last else NEXT), i + 1)
            self.put_desc(DESC, head, GPA + table, 16 * len(descs), INDIRECT, 0)
            self.next_desc += 1
        else:
            idx = [(head + i) % self.qsize for i in range(len(descs))]
            for i, (addr, length, flags) in enumerate(descs):
                last = i == len(descs) - 1
                self.put_desc(DESC, idx[i], addr, length, flags | (0 if last else NEXT),
                              0 if last else idx[i + 1])
            self.next_desc += len(descs)
        slot = AVAIL + 4 + 2 * (self.avail_idx % self.qsize)
        struct.pack_into("<H", self.mm, slot, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        struct.pack_into("<H", self.mm, AVAIL + 2, self.avail_idx)
        return Sent(head, writable)

    def notify(self) -> None:
        os.eventfd_write(self.kick, 1)

    def set_used_event(self, value: int) -> None:
        struct.pack_into("<H", self.mm, AVAIL + 4 + 2 * self.qsize, value & 0xFFFF)

    def avail_event(self) -> int:
        return int(struct.unpack_from("<H", self.mm, USED + 4 + 8 * self.qsize)[0])

    def used_idx(self) -> int:
        return int(struct.unpack_from("<H", self.mm, USED + 2)[0])

    def wait_used(self, n: int, timeout: float = 10.0) -> list[tuple[int, int]]:
        """Wait for ``n`` more used entries (each announced by a call unless suppressed)."""
        deadline = time.monotonic() + timeout
        while (self.used_idx() - self.used_seen) & 0xFFFF < n:
            left = deadline - time.monotonic()
            assert left > 0, f"guest would hang: {n} request(s) never completed"
            select.select([self.call], [], [], min(left, 0.05))
        out = []
        for _ in range(n):
            slot = USED + 4 + 8 * (self.used_seen % self.qsize)
            out.append(struct.unpack_from("<II", self.mm, slot))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return out

    def called(self) -> bool:
        try:
            os.eventfd_read(self.call)
        except BlockingIOError:
            return False
        return True

    def data(self, sent: Sent) -> bytes:
        return b"".join(self.mm[a:a + n] for a, n in sent.writable)

    def submit(self, reqs: list[list[Seg]], **kw: bool) -> list[Sent]:
        sent = [self.chain(r, **kw) for r in reqs]
        self.notify()
        return sent

    def run(self, reqs: list[list[Seg]], **kw: bool) -> list[tuple[bytes, int]]:
        """Submit, wait, return each request's writable bytes and used length, in order."""
        sent = self.submit(reqs, **kw)
        used = dict(self.wait_used(len(sent)))
        return [(self.data(s), used[s.head]) for s in sent]


# -- virtio-i2c request builders ------------------------------------------------------


def hdr(addr: int, flags: int = 0) -> bytes:
    return struct.pack("<HHI", addr << 1, 0, flags)


def i2c_w(addr: int, data: bytes, fail_next: bool = False) -> list[Seg]:
    return [hdr(addr, I2C_FLAGS_FAIL_NEXT if fail_next else 0), *([data] if data else []), 1]


def i2c_r(addr: int, n: int, fail_next: bool = False) -> list[Seg]:
    return [hdr(addr, I2C_FLAGS_M_RD | (I2C_FLAGS_FAIL_NEXT if fail_next else 0)),
            *([n] if n else []), 1]


# -- fixtures --------------------------------------------------------------------------


class Agent:
    """``run_agent`` on its own thread and loop, as the separate process would be."""

    def __init__(self, path: str, url: tuple[str, int], bus: str, kind: str,
                 timeout: float = 5.0) -> None:
        self.path = path
        self.loop = new_event_loop()
        ready = asyncio.Event()
        self.error: BaseException | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.task = self.loop.create_task(
                    run_agent(path, url[0], url[1], bus, kind, timeout=timeout, ready=ready))
                self.loop.run_until_complete(self.task)
            except BaseException as e:
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "agent did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.task.cancel)
            self.thread.join(15)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def running() -> Iterator[Running]:
    r, t = start_server_thread(load_board(None))
    yield r
    stop_server_thread(r, t)


@pytest.fixture
def i2c_agent(running: Running, tmp_path: os.PathLike[str]) -> Iterator[Agent]:
    a = Agent(os.path.join(tmp_path, "i2c.sock"), (running.host, running.port), "1", "i2c")
    yield a
    a.stop()


@pytest.fixture
def fe(i2c_agent: Agent) -> Iterator[FrontEnd]:
    f = FrontEnd(i2c_agent.path).start()
    yield f
    f.close()


def eeprom_read(f: FrontEnd, at: int, n: int) -> bytes:
    (_, (data, used)) = f.run([i2c_w(0x50, at.to_bytes(2, "big"), fail_next=True),
                               i2c_r(0x50, n)])
    assert data[-1] == OK
    assert used == n + 1
    return data[:n]


# -- negotiation -----------------------------------------------------------------------------


def test_i2c_features_and_protocol_features(i2c_agent: Agent) -> None:
    f = FrontEnd(i2c_agent.path)
    try:
        feats = f.call_u64(Req.GET_FEATURES)
        for bit in (0, 28, 29, 30, 32):  # ZERO_LENGTH_REQUEST, INDIRECT, EVENT_IDX, PF, V1
            assert feats >> bit & 1, bit
        assert not feats & (1 << 34 | 1 << 33 | 1 << 40)  # no packed, no IOMMU, no reset
        proto = f.call_u64(Req.GET_PROTOCOL_FEATURES)
        assert proto & vu.PF_REPLY_ACK
        assert not proto & vu.PF_CONFIG  # QEMU's i2c device does not want it
        assert f.call_u64(Req.GET_MAX_MEM_SLOTS) >= 8
        # Unknown requests are refused with a non-zero ack, not ignored silently.
        assert f.ack(Req.SET_VRING_ENDIAN, vu.VRING_STATE.pack(0, 0)) != 0
    finally:
        f.close()


# -- I2C through the ring -----------------------------------------------------------------------


def test_sensor_id_register_with_indirect_write_then_read(fe: FrontEnd) -> None:
    # TMP117 device-ID register 0x0F reads 0x0117, big-endian.
    (w, (data, used)) = fe.run([i2c_w(0x48, b"\x0f", fail_next=True), i2c_r(0x48, 2)])
    assert w == (bytes([OK]), 1)
    assert data == b"\x01\x17" + bytes([OK])
    assert used == 3


def test_direct_descriptors_and_eeprom_roundtrip(fe: FrontEnd) -> None:
    (res,) = fe.run([i2c_w(0x50, b"\x00\x40" + b"hello")], indirect=False)
    assert res == (bytes([OK]), 1)
    time.sleep(0.01)
    assert eeprom_read(fe, 0x40, 5) == b"hello"


def test_zero_length_probe_acks_present_and_errs_absent(fe: FrontEnd) -> None:
    results = fe.run([i2c_w(0x50, b""), i2c_w(0x33, b""), i2c_r(0x48, 0)])
    assert [d for d, _ in results] == [bytes([OK]), bytes([ERR]), bytes([OK])]


def test_nack_first_message_fails_whole_chain_and_leaves_device_untouched(fe: FrontEnd) -> None:
    before = eeprom_read(fe, 0x100, 4)
    results = fe.run([i2c_w(0x33, b"\x00", fail_next=True),
                      i2c_w(0x50, b"\x01\x00" + b"XXXX")])
    assert [d for d, _ in results] == [bytes([ERR]), bytes([ERR])]
    assert eeprom_read(fe, 0x100, 4) == before


def test_group_split_across_kicks_is_held_then_sent_whole(fe: FrontEnd) -> None:
    fe.submit([i2c_w(0x48, b"\x0f", fail_next=True)])
    time.sleep(0.2)
    assert fe.used_idx() == 0  # a transaction half queued is not executed
    (rd,) = fe.submit([i2c_r(0x48, 2)])
    used = fe.wait_used(2)
    assert sorted(h for h, _ in used) == [0, 1]
    assert fe.data(rd) == b"\x01\x17\x00"


@pytest.mark.parametrize("case", ["short_header", "no_status", "read_with_data",
                                  "write_with_writable", "outside_ram", "loop", "nested",
                                  "readable_after_writable", "bad_address"])
def test_malformed_chain_completes_with_err_and_ring_keeps_working(
        fe: FrontEnd, case: str) -> None:
    status = fe.alloc(1)
    st = (GPA + status, 1, WRITE)
    h = fe.alloc(8)
    fe.mm[h:h + 8] = hdr(0x48)
    hd = (GPA + h, 8, 0)
    raw: list[tuple[int, int, int]] = {
        "short_header": [(GPA + h, 4, 0), st],
        "no_status": [hd],
        "read_with_data": [(GPA + h, 8, 0), (GPA + h, 8, 0), st],
        "write_with_writable": [hd, (GPA + fe.alloc(4), 4, WRITE), st],
        "outside_ram": [hd, (GPA + RAM - 2, 16, 0), st],
        "loop": [],
        "nested": [],
        "readable_after_writable": [hd, st, (GPA + h, 8, 0)],
        "bad_address": [],
    }[case]
    fe.mm[status] = 0xEE
    if case == "read_with_data":
        fe.mm[h:h + 8] = hdr(0x48, I2C_FLAGS_M_RD)
    if case == "bad_address":
        fe.mm[h:h + 8] = struct.pack("<HHI", 0x0101, 0, 0)  # bit 0 set: not an address
        raw = [hd, st]
    if case in ("loop", "nested"):
        head = fe.next_desc % fe.qsize
        if case == "loop":
            fe.put_desc(DESC, head, GPA + h, 8, NEXT, head)
        else:
            t = fe.table_at
            fe.table_at += 32
            fe.put_desc(t, 0, GPA + t, 32, INDIRECT, 0)
            fe.put_desc(DESC, head, GPA + t, 32, INDIRECT, 0)
        fe.next_desc += 1
        struct.pack_into("<H", fe.mm, AVAIL + 4 + 2 * (fe.avail_idx % fe.qsize), head)
        fe.avail_idx += 1
        struct.pack_into("<H", fe.mm, AVAIL + 2, fe.avail_idx)
        fe.notify()
    else:
        fe.submit([[]], raw=raw)  # type: ignore[call-arg]
    ((_, used),) = fe.wait_used(1)
    if case in ("short_header", "read_with_data", "write_with_writable", "bad_address",
                "readable_after_writable"):
        assert fe.mm[status] == ERR
        assert used == 1
    elif case == "outside_ram":
        assert fe.mm[status] == ERR  # the status buffer itself was reachable
        assert used == 1
    else:
        assert used == 0  # nothing the device may write: given back untouched
    (_, (data, _)) = fe.run([i2c_w(0x48, b"\x0f", fail_next=True), i2c_r(0x48, 2)])
    assert data == b"\x01\x17\x00"


def test_event_idx_suppresses_and_requests_interrupts(fe: FrontEnd) -> None:
    fe.called()
    fe.set_used_event(0x8000)  # the driver wants no interrupt for a long while
    fe.run([i2c_w(0x50, b"")])
    assert fe.avail_event() == fe.avail_idx  # kick me for the next entry
    assert not fe.called()
    fe.set_used_event(fe.used_seen)  # interrupt on the next used entry
    fe.run([i2c_w(0x50, b"")])
    assert fe.called()


def test_without_event_idx_no_interrupt_flag_is_honoured(i2c_agent: Agent) -> None:
    f = FrontEnd(i2c_agent.path, event_idx=False).start()
    try:
        f.called()
        struct.pack_into("<H", f.mm, AVAIL, 1)  # VRING_AVAIL_F_NO_INTERRUPT
        f.run([i2c_w(0x50, b"")])
        assert not f.called()
        struct.pack_into("<H", f.mm, AVAIL, 0)
        f.run([i2c_w(0x50, b"")])
        assert f.called()
    finally:
        f.close()


def test_ring_wraps_many_times(fe: FrontEnd) -> None:
    for i in range(40):
        (_, (data, _)) = fe.run([i2c_w(0x48, b"\x0f", fail_next=True), i2c_r(0x48, 2)])
        assert data == b"\x01\x17\x00", i
    assert fe.used_idx() == 80


def test_get_vring_base_stops_the_ring_and_restart_resumes(fe: FrontEnd) -> None:
    fe.run([i2c_w(0x50, b"")])
    assert fe.stop_ring() == 1
    fe.submit([i2c_w(0x50, b"")])
    time.sleep(0.2)
    assert fe.used_idx() == 1  # stopped: the kick is not served
    fe.driver_ok(base=1)  # restart picks the queued request up
    assert fe.wait_used(1)[0][1] == 1


def test_add_mem_reg_path(i2c_agent: Agent) -> None:
    f = FrontEnd(i2c_agent.path)
    try:
        f.start(add_mem_reg=True)
        (_, (data, _)) = f.run([i2c_w(0x48, b"\x0f", fail_next=True), i2c_r(0x48, 2)])
        assert data == b"\x01\x17\x00"
        assert f.ack(Req.REM_MEM_REG, vu.U64.pack(0) + f.region().pack(), (f.fd,)) == 0
    finally:
        f.close()


def test_front_end_reconnects_after_qemu_goes_away(i2c_agent: Agent) -> None:
    for _ in range(3):
        f = FrontEnd(i2c_agent.path).start()
        (_, (data, _)) = f.run([i2c_w(0x48, b"\x0f", fail_next=True), i2c_r(0x48, 2)])
        assert data == b"\x01\x17\x00"
        f.close()


def test_mem_table_without_fds_is_refused(i2c_agent: Agent) -> None:
    f = FrontEnd(i2c_agent.path)
    try:
        f.connect_start()
        assert f.ack(Req.SET_MEM_TABLE, vu.mem_table([f.region()])) != 0
    finally:
        f.close()


# -- failures on the server side ------------------------------------------------------------------


def test_lost_server_completes_with_err_then_reconnects(tmp_path: os.PathLike[str]) -> None:
    board = load_board(None)
    r, t = start_server_thread(board)
    port = r.port
    agent = Agent(os.path.join(tmp_path, "s.sock"), ("127.0.0.1", port), "1", "i2c")
    f = FrontEnd(agent.path).start()
    try:
        assert f.run([i2c_w(0x50, b"")])[0][0] == bytes([OK])
        stop_server_thread(r, t)
        assert f.run([i2c_w(0x50, b"")])[0][0] == bytes([ERR])
        r2 = _serve_on(board, port)
        try:
            deadline = time.monotonic() + 10
            while f.run([i2c_w(0x50, b"")])[0][0] != bytes([OK]):
                assert time.monotonic() < deadline, "agent never reconnected"
                time.sleep(0.1)
        finally:
            stop_server_thread(*r2)
    finally:
        f.close()
        agent.stop()


def _serve_on(board: object, port: int) -> tuple[Running, threading.Thread]:
    loop = new_event_loop()
    ready = threading.Event()
    holder: dict[str, Server] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            s = Server(board, host="127.0.0.1", port=port)  # type: ignore[arg-type]
            await s.start()
            holder["s"] = s
            ready.set()
            await s.serve_forever()

        loop.run_until_complete(main())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(10)
    return Running(holder["s"], board, loop), t  # type: ignore[arg-type]


STALLING = """
name = "stall"
[[i2c]]
name = "1"
backend = "sim"
[[i2c.devices]]
type = "eeprom"
address = 0x50
size = 256
page_size = 16
address_bytes = 1
stall_s = 2.0
[[i2c.devices]]
type = "eeprom"
address = 0x51
size = 256
page_size = 16
address_bytes = 1
"""


def test_timeout_completes_with_err(tmp_path: os.PathLike[str]) -> None:
    r, t = start_server_thread(board_from_toml_text(STALLING))
    agent = Agent(os.path.join(tmp_path, "t.sock"), (r.host, r.port), "1", "i2c", timeout=0.3)
    f = FrontEnd(agent.path).start()
    try:
        t0 = time.monotonic()
        assert f.run([i2c_w(0x50, b"\x00\x01")])[0][0] == bytes([ERR])
        # A deadline (the agent's 0.3 s, or the server's 1 s) ends it, not the 2 s stall.
        assert time.monotonic() - t0 < 1.8
        # The bus stays busy until the stall ends; after that it works again.
        deadline = time.monotonic() + 10
        while f.run([i2c_w(0x51, b"\x00\x01")])[0][0] != bytes([OK]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        f.close()
        agent.stop()
        stop_server_thread(r, t)


# -- virtio-spi ---------------------------------------------------------------------------


@pytest.fixture
def spi_fe(running: Running, tmp_path: os.PathLike[str]) -> Iterator[FrontEnd]:
    a = Agent(os.path.join(tmp_path, "spi.sock"), (running.host, running.port), "0", "spi")
    f = FrontEnd(a.path, features=vu.F_VERSION_1 | vu.F_INDIRECT_DESC | vu.F_EVENT_IDX
                 | vu.F_PROTOCOL_FEATURES)
    yield f
    f.close()
    a.stop()


def spi_req(tx: bytes | None, rx: int, *, cs: int = 0, freq: int = 1_000_000,
            mode: int = 0, cs_change: int = 0) -> list[Seg]:
    head = SpiTransferHead(chip_select_id=cs, bits_per_word=8, tx_nbits=1 if tx else 0,
                           rx_nbits=1 if rx else 0, mode=mode, freq=freq,
                           cs_change=cs_change).pack()
    return [head, *([tx] if tx else []), *([rx] if rx else []), 1]


def test_spi_config_is_answered_before_features(spi_fe: FrontEnd) -> None:
    f = spi_fe
    assert f.call_u64(Req.GET_PROTOCOL_FEATURES) & vu.PF_CONFIG
    f.send(Req.SET_PROTOCOL_FEATURES, vu.U64.pack(vu.PF_CONFIG | vu.PF_REPLY_ACK))
    for _ in range(6):  # the Linux driver's probe reads it six times
        f.send(Req.GET_CONFIG, vu.CONFIG_HEAD.pack(0, 32, 0) + bytes(32))
        payload = f.reply(Req.GET_CONFIG)
        assert vu.CONFIG_HEAD.unpack_from(payload) == (0, 32, 0)
        cfg = SpiConfig.unpack(payload[12:])
        assert cfg.cs_max_number == 2
        assert cfg.max_freq_hz == 50_000_000


def test_spi_flash_id_program_readback_and_param_err(spi_fe: FrontEnd) -> None:
    f = spi_fe.start()
    ((jedec, used),) = f.run([spi_req(b"\x9f\0\0\0", 4)])
    assert jedec == b"\xff\xef\x40\x16\x00"[:0] + jedec[:1] + b"\xef\x40\x16\x00"
    assert used == 5
    # write enable, page program, then a read in two transfers (cmd, data)
    page = bytes(range(16))
    assert f.run([spi_req(b"\x06", 0)])[0][0] == b"\x00"
    assert f.run([spi_req(b"\x02\x00\x10\x00" + page, 0)])[0][0] == b"\x00"
    deadline = time.monotonic() + 5
    while True:  # poll the status register until the program completes
        ((st, _),) = f.run([spi_req(b"\x05\x00", 2)])
        if not st[1] & 1 or time.monotonic() > deadline:
            break
    ((rd, used),) = f.run([spi_req(b"\x03\x00\x10\x00" + bytes(16), 20)])
    assert rd[4:20] == page
    assert used == 21
    # PARAM_ERR: above the advertised maximum clock, and a chip select the board lacks
    results = f.run([spi_req(b"\x9f\0\0\0", 4, freq=60_000_000), spi_req(b"\x00", 1, cs=2)])
    assert [d[-1] for d, _ in results] == [1, 1]
    # loopback on CS1, a half-duplex read and a malformed head
    ((lb, _),) = f.run([spi_req(b"abc", 3, cs=1)])
    assert lb == b"abc\x00"
    ((bad, used),) = f.run([[b"\x00" * 8, 1]])
    assert (bad, used) == (b"\x01", 1)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_spi_back_to_back_transfers_warn_once_per_chip_select(spi_fe: FrontEnd) -> None:
    """Linux's driver does not mark message ends: the agent says CS is released between."""
    logger = logging.getLogger("busbridge.vhost")
    h = Records()
    old_level = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.WARNING)
    try:
        f = spi_fe.start()

        def warned() -> list[int]:
            return [r.fields["cs"] for r in h.records  # type: ignore[attr-defined]
                    if "chip select released" in r.getMessage()]

        f.run([spi_req(b"\x9f", 0)])
        f.run([spi_req(b"abc", 3, cs=1)])  # another chip select in between: not the pattern
        f.run([spi_req(b"\x05", 0, cs_change=1)])
        f.run([spi_req(None, 3)])  # the previous transfer on CS0 asked for a CS toggle
        assert warned() == []
        f.run([spi_req(None, 3)])  # write-then-read shape on CS0, cs_change 0 before it
        assert warned() == [0]
        f.run([spi_req(b"\x9f", 0)])
        f.run([spi_req(None, 3)])
        f.run([spi_req(b"x", 1, cs=1)])
        f.run([spi_req(b"y", 1, cs=1)])
        assert warned() == [0, 1]  # once per chip select
        (r,) = [r for r in h.records if r.fields["cs"] == 0]  # type: ignore[attr-defined]
        assert "docs/vhost-user.md" in r.fields["fix"]  # type: ignore[attr-defined]
    finally:
        logger.removeHandler(h)
        logger.setLevel(old_level)


def test_spi_config_partial_reads(spi_fe: FrontEnd) -> None:
    f = spi_fe
    f.send(Req.GET_CONFIG, vu.CONFIG_HEAD.pack(12, 4, 0) + bytes(4))
    payload = f.reply(Req.GET_CONFIG)
    assert struct.unpack_from("<I", payload, 12)[0] == 50_000_000  # max_freq_hz
    f.send(Req.GET_CONFIG, vu.CONFIG_HEAD.pack(0, 32, 0) + bytes(32))
    whole = f.reply(Req.GET_CONFIG)[12:]
    f.send(Req.GET_CONFIG, vu.CONFIG_HEAD.pack(30, 8, 0) + bytes(8))  # runs past the end
    assert f.reply(Req.GET_CONFIG)[12:] == whole[30:] + bytes(6)


def test_many_requests_in_one_kick_are_split_into_frames(i2c_agent: Agent) -> None:
    f = FrontEnd(i2c_agent.path, qsize=128).start()
    try:
        # 100 zero-length probes: more than one frame may carry (max_requests 64).
        results = f.run([i2c_w(0x50 if i % 2 else 0x33, b"") for i in range(100)])
        assert [d for d, _ in results] == [bytes([OK if i % 2 else ERR]) for i in range(100)]
    finally:
        f.close()


def test_open_group_filling_the_ring_is_failed_not_held_forever(i2c_agent: Agent) -> None:
    f = FrontEnd(i2c_agent.path, qsize=4).start()
    try:
        results = f.run([i2c_w(0x50, b"\x00\x00", fail_next=True) for _ in range(4)])
        assert [d for d, _ in results] == [bytes([ERR])] * 4
    finally:
        f.close()


def test_cli_refuses_an_unknown_bus(running: Running, tmp_path: os.PathLike[str]) -> None:
    from click.testing import CliRunner

    from bridge.cli.main import cli

    res = CliRunner().invoke(cli, ["vhost-user", "--socket", os.path.join(tmp_path, "x.sock"),
                                   "--connect", f"{running.host}:{running.port}",
                                   "--bus", "9"])
    assert res.exit_code == 1
    assert "no I2C bus '9'" in res.output
    assert "1, 2" in res.output
    assert not os.path.exists(os.path.join(tmp_path, "x.sock"))


def test_spi_lost_server_is_trans_err(tmp_path: os.PathLike[str]) -> None:
    r, t = start_server_thread(load_board(None))
    agent = Agent(os.path.join(tmp_path, "s.sock"), (r.host, r.port), "0", "spi")
    f = FrontEnd(agent.path).start()
    try:
        assert f.run([spi_req(b"abc", 3, cs=1)])[0][0] == b"abc\x00"
        stop_server_thread(r, t)
        assert f.run([spi_req(b"abc", 3, cs=1)])[0][0][-1] == 2  # TRANS_ERR, rx untouched
    finally:
        f.close()
        agent.stop()


def test_agent_imports_no_board_side_libraries() -> None:
    import subprocess
    import sys

    code = ("import sys, bridge.vhost.agent, bridge.cli.vhost; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('smbus2', 'spidev')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.strip() == "[]"


def test_oversized_buffer_is_err_without_reaching_the_board(fe: FrontEnd) -> None:
    (res,) = fe.run([i2c_w(0x50, b"\x00\x00" + b"\xab" * 70_000)])
    assert res == (bytes([ERR]), 1)
    assert eeprom_read(fe, 0, 2) != b"\xab\xab"
