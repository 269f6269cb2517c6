"""What the kit needs to know about the board, found out over the wire and cached.

SPEC.md defines no board; the device-level checks (FAIL_NEXT on a real NACK, 10-bit,
"nothing ran") need devices whose behaviour is known.  The facts below are those of
the reference server's embedded default board, as SPEC.md Appendix A states them (the
10-bit device at 0x2A5 has 8-bit registers with auto-increment, 0x10 a counter; the
24C32 commits a page write at STOP).  Each is verified by reading the device before a
check relies on it; a board without it makes the check SKIP with a reason, never pass
by accident.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .model import (
    SPI_OK,
    Head,
    Msg,
    Result,
    Violation,
    Xfer,
    chain,
    check_i2c_result,
    check_spi_result,
    i2c_frame,
    rd,
    spi_frame,
    wr,
)
from .registry import Ctx, Fail, Skip
from .wire import Conn, Frame

#: Default-board devices: (bus, address, register, expected bytes).
SENSOR_ID = ("1", 0x48, 0x0F, b"\x01\x17")          # TMP117 device ID register
TEN_BIT_ID = ("2", 0x2A5, 0x00, b"\xa5")            # the 10-bit register map's ID
EEPROM = ("1", 0x50)                                 # 24C32: 2-byte word address, 32-byte pages
EEPROM_SCRATCH = 0x0FC0                              # the last two pages, the kit's scratch area
#: Where in the scratch area each check writes, so that no two checks share a byte.
EEPROM_SCRATCH_OFFSETS = {"probe": 0x0FC0, "rw": 0x0FC4, "refused": 0x0FCC, "chain": 0x0FD0,
                          "chain-rest": 0x0FD4, "drop": 0x0FD8, "queued": 0x0FDC,
                          "dup": 0x0FE0, "unauthorized": 0x0FE4, "busy": 0x0FE8,
                          "denied": 0x0FEC, "limit": 0x0FF0, "behind-fatal": 0x0FF4,
                          "eof-in-flight": 0x0FF8, "tls-close": 0x0FFC}
FLASH = ("0", 0, b"\xef\x40\x16")                    # W25Q32 JEDEC ID on CS 0
LOOPBACK = ("0", 1)                                  # MISO = MOSI on CS 1

#: Below this, a "busy" frame is too short for the timing checks to judge by order.
MIN_HEAVY_S = 0.05

_rid = [1000]


def next_id() -> int:
    """Ids unique within a run, so that a stray answer is never taken for another's."""
    _rid[0] += 1
    return _rid[0]


def ask(ctx: Ctx, c: Conn, obj: list[Any], what: str = "an answer") -> Frame:
    c.send(obj)
    return ctx.recv(c, what)


def i2c(ctx: Ctx, c: Conn, bus: str, msgs: list[Msg], timeout_ms: int | None = None) -> Result:
    """Run an I2C frame and hold its RESULT against §4.5/§8.1."""
    rid = next_id()
    f = ask(ctx, c, i2c_frame(rid, bus, msgs, timeout_ms), f"the RESULT of I2C frame {rid}")
    try:
        return check_i2c_result(f, rid, msgs)
    except Violation as e:
        raise Fail(f"I2C frame {rid} on bus {bus!r}: {e}; got {f.brief()}") from None


def spi(ctx: Ctx, c: Conn, bus: str, cs: int, xfers: list[Xfer],
        timeout_ms: int | None = None) -> Result:
    rid = next_id()
    f = ask(ctx, c, spi_frame(rid, bus, cs, xfers, timeout_ms), f"the RESULT of SPI frame {rid}")
    try:
        return check_spi_result(f, rid, xfers)
    except Violation as e:
        raise Fail(f"SPI frame {rid} on bus {bus!r}: {e}; got {f.brief()}") from None


def reg_read(ctx: Ctx, c: Conn, bus: str, addr: int, reg: int, n: int,
             ten_bit: bool = False) -> bytes | None:
    """Pointer write + read as one chain; None if the device did not answer."""
    r = i2c(ctx, c, bus, chain(wr(addr, bytes([reg]), ten_bit=ten_bit),
                               rd(addr, n, ten_bit=ten_bit)))
    return r.reads[0] if r.status == b"\x00\x00" else None


@dataclass(frozen=True)
class Heavy:
    """A read-only I2C frame that keeps a bus busy for ``seconds`` (measured)."""

    bus: str
    msgs: list[Msg]
    seconds: float


class Board:
    """Facts about the board under test, verified on first use and cached in the Ctx."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    def _cached(self, key: str) -> Any:
        return self.ctx.cache.get(key)

    def i2c_names(self) -> list[str]:
        return [b["name"] for b in self.ctx.i2c_buses()]

    def need_i2c(self) -> str:
        names = self.i2c_names()
        if not names:
            raise Skip("the server has no I2C bus")
        return names[0]

    def need_spi(self) -> str:
        names: list[str] = [b["name"] for b in self.ctx.spi_buses()]
        if not names:
            raise Skip("the server has no SPI bus")
        return names[0]

    def msg_len(self, bus: str) -> int:
        for b in self.ctx.i2c_buses():
            if b["name"] == bus:
                return min(int(b["max_msg_len"]), self.ctx.limits["max_i2c_len"])
        raise Skip(f"no I2C bus {bus!r}")

    def functionality(self, bus: str) -> int:
        for b in self.ctx.i2c_buses():
            if b["name"] == bus:
                return int(b["functionality"])
        raise Skip(f"no I2C bus {bus!r}")

    def present(self, bus: str) -> list[int]:
        """7-bit addresses 0x08..0x77 that ACK a zero-length read (like i2cdetect -r)."""
        key = f"present:{bus}"
        if key not in self.ctx.cache:
            addrs = list(range(0x08, 0x78))
            found: list[int] = []
            step = self.ctx.limits["max_requests"]
            c = self.ctx.open()
            for i in range(0, len(addrs), step):
                part = addrs[i:i + step]
                r = i2c(self.ctx, c, bus, [rd(a, 0) for a in part])
                found += [a for a, s in zip(part, r.status, strict=True) if s == 0]
            c.close()
            self.ctx.cache[key] = found
        return list(self.ctx.cache[key])

    def absent(self, bus: str) -> int:
        """A 7-bit address nothing answers on ``bus`` (for NACK checks)."""
        present = set(self.present(bus))
        for a in (0x77, 0x76, 0x75, 0x51, 0x3C, 0x08):
            if a not in present:
                return a
        raise Skip(f"every address answers on I2C bus {bus!r}")

    def sensor(self) -> tuple[str, int, int, bytes]:
        """The TMP117's ID register: a read with a known answer."""
        return self._verified("sensor", SENSOR_ID, ten_bit=False)

    def ten_bit(self) -> tuple[str, int, int, bytes]:
        return self._verified("ten_bit", TEN_BIT_ID, ten_bit=True)

    def _verified(self, key: str, fact: tuple[str, int, int, bytes],
                  ten_bit: bool) -> tuple[str, int, int, bytes]:
        if key not in self.ctx.cache:
            bus, addr, reg, want = fact
            ok = False
            if bus in self.i2c_names():
                with self.ctx.open() as c:
                    ok = reg_read(self.ctx, c, bus, addr, reg, len(want), ten_bit) == want
            self.ctx.cache[key] = ok
        if not self.ctx.cache[key]:
            bus, addr, reg, want = fact
            raise Skip(f"board lacks the default board's device at {addr:#x} on I2C bus "
                       f"{bus!r} (register {reg:#04x} = {want.hex(' ')})")
        return fact

    def eeprom(self) -> tuple[str, int]:
        """The 24C32 at 0x50: a write then a read-back of the scratch area must agree."""
        if "eeprom" not in self.ctx.cache:
            bus = EEPROM[0]
            ok = False
            if bus in self.i2c_names():
                with self.ctx.open() as c:
                    pattern = bytes([0x5A, 0xA5, int(time.time()) & 0xFF])
                    ok = self.eeprom_write(c, EEPROM_SCRATCH, pattern) and \
                        self.eeprom_read(c, EEPROM_SCRATCH, 3) == pattern
            self.ctx.cache["eeprom"] = ok
        if not self.ctx.cache["eeprom"]:
            raise Skip("board lacks the default board's 24C32 EEPROM at 0x50 on I2C bus '1'")
        return EEPROM

    def eeprom_msg(self, where: int, data: bytes, fail_next: bool = False) -> Msg:
        return wr(EEPROM[1], bytes([where >> 8, where & 0xFF]) + data, fail_next=fail_next)

    def eeprom_write(self, c: Conn, where: int, data: bytes) -> bool:
        r = i2c(self.ctx, c, EEPROM[0], [self.eeprom_msg(where, data)])
        return r.status == b"\x00"

    def eeprom_read(self, c: Conn, where: int, n: int) -> bytes | None:
        r = i2c(self.ctx, c, EEPROM[0], chain(wr(EEPROM[1], bytes([where >> 8, where & 0xFF])),
                                              rd(EEPROM[1], n)))
        return r.reads[0] if r.status == b"\x00\x00" else None

    def flash(self) -> tuple[str, int]:
        """The SPI NOR flash: JEDEC ID 9F answers ef 40 16."""
        if "flash" not in self.ctx.cache:
            bus, cs, jedec = FLASH
            ok = False
            if any(b["name"] == bus for b in self.ctx.spi_buses()):
                with self.ctx.open() as c:
                    r = spi(self.ctx, c, bus, cs, [self.xfer(bus, cs, b"\x9f", 0),
                                                   self.xfer(bus, cs, None, 3)])
                    ok = r.status == b"\x00\x00" and r.reads == [jedec]
            self.ctx.cache["flash"] = ok
        if not self.ctx.cache["flash"]:
            raise Skip("board lacks the default board's SPI NOR flash (JEDEC ef 40 16) on "
                       "SPI bus '0' CS 0")
        return FLASH[0], FLASH[1]

    def loopback(self) -> tuple[str, int]:
        """An SPI loopback: a full-duplex transfer reads back what it sent."""
        if "loopback" not in self.ctx.cache:
            bus, cs = LOOPBACK
            ok = False
            if any(b["name"] == bus for b in self.ctx.spi_buses()):
                with self.ctx.open() as c:
                    tx = b"\x3c\xc3\x5a"
                    r = spi(self.ctx, c, bus, cs, [self.xfer(bus, cs, tx, len(tx))])
                    ok = r.status == bytes([SPI_OK]) and r.reads == [tx]
            self.ctx.cache["loopback"] = ok
        if not self.ctx.cache["loopback"]:
            raise Skip("board lacks the default board's SPI loopback on SPI bus '0' CS 1")
        return LOOPBACK

    def head(self, bus: str, cs: int, **kw: Any) -> Head:
        """A head valid for this bus's config: a supported mode and word size, no delays."""
        cfg = self.ctx.spi_config(bus)
        base: dict[str, Any] = {"cs": cs, "bits_per_word": cfg.valid_bpw(),
                                "mode": cfg.valid_mode()}
        if cfg.max_freq_hz:
            base["freq"] = min(1_000_000, cfg.max_freq_hz)
        base.update(kw)
        return Head(**base)

    def xfer(self, bus: str, cs: int, tx: bytes | None, rx_len: int, **kw: Any) -> Xfer:
        return Xfer(self.head(bus, cs, **kw), tx, rx_len)

    def heavy(self, bus: str) -> Heavy:
        """The read-only frame that keeps ``bus`` busiest: many long reads of one device.

        Measured on an idle connection (deadline far away); the longest of the present
        devices wins.  Timing checks derive their bounds from this figure.
        """
        key = f"heavy:{bus}"
        if key not in self.ctx.cache:
            try:
                self.ctx.cache[key] = self._measure_heavy(bus)
            except Skip as e:
                self.ctx.cache[key] = str(e)
        h: Heavy | str = self.ctx.cache[key]
        if isinstance(h, str):
            raise Skip(h)
        return h

    def _measure_heavy(self, bus: str) -> Heavy:
        present = self.present(bus)
        if not present:
            raise Skip(f"nothing answers on I2C bus {bus!r}; no frame can keep it busy")
        lim = self.ctx.limits
        length = self.msg_len(bus)
        if length == 0:
            raise Skip(f"I2C bus {bus!r} cannot read")
        n = min(lim["max_requests"], (lim["max_frame"] - 64) // (length + 128))
        best: Heavy | None = None
        with self.ctx.open() as c:
            for a in present[:8]:
                msgs = [rd(a, length) for _ in range(max(n, 1))]
                t0 = time.perf_counter()
                r = i2c(self.ctx, c, bus, msgs, timeout_ms=600_000)
                took = time.perf_counter() - t0
                if r.status != bytes(len(msgs)):
                    continue
                if best is None or took > best.seconds:
                    best = Heavy(bus, msgs, took)
        if best is None:
            raise Skip(f"no device on I2C bus {bus!r} answers long reads")
        if best.seconds < MIN_HEAVY_S:
            raise Skip(f"the heaviest frame on I2C bus {bus!r} takes {best.seconds * 1000:.1f} ms: "
                       "too little work to tell waiting for a bus from not waiting")
        return best


def fresh_marker(board: Board, c: Conn, where: int) -> int:
    """A byte unlike what the EEPROM holds at ``where``: writing it shows whether a write ran."""
    board.eeprom()
    now = board.eeprom_read(c, where, 1)
    if now is None:
        raise Fail(f"EEPROM read-back of {where:#06x} failed")
    return (now[0] + 0x3B) & 0xFF or 0x3B


def holds(board: Board, c: Conn, where: int, value: int) -> bool:
    got = board.eeprom_read(c, where, 1)
    if got is None:
        raise Fail(f"EEPROM read-back of {where:#06x} failed")
    return got[0] == value
