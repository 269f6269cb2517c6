"""Solomon Systech SSD1306 OLED controller on a 128×64 (or 128×32) panel (datasheet: SSD1306
rev. 1.1: §8.1.5 I2C, §9 command table, §10.1.3 addressing modes), with screenshots as PNG."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any, Literal

from ..model import Quantity, Value
from .base import I2CChip

WIDTH = 128
#: Commands with argument bytes, and how many (§9, plus 0xAD IREF of SSD1306B).
_ARGS = {0x81: 1, 0x20: 1, 0x21: 2, 0x22: 2, 0xA8: 1, 0xD3: 1, 0xDA: 1, 0xD5: 1, 0xD9: 1,
         0xDB: 1, 0x8D: 1, 0xAD: 1, 0x26: 6, 0x27: 6, 0x29: 5, 0x2A: 5, 0xA3: 2}


def png(rows: list[bytes], width: int) -> bytes:
    """A PNG of 8-bit grayscale ``rows`` (zlib from the standard library: no dependency)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, len(rows), 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


class Ssd1306(I2CChip):
    """SSD1306 on I2C: a control byte (Co, D/C#) then commands or display RAM data.

    Modelled: the control byte protocol (Co = 1: one byte then another
    control byte; Co = 0: the rest of the message is commands or data),
    every command's argument count, the 128 × 8-page display RAM written in
    page, horizontal and vertical addressing modes with the column and page
    windows (0x21/0x22, 0xB0-0xB7, 0x00-0x1F), display on/off, contrast,
    inverse, entire-display-on, start line, display offset, segment remap
    and COM scan direction; :meth:`screenshot` renders what the panel shows
    as a PNG (``A1``/``C8``, the usual module init, is upright).  Reads are
    not supported on I2C and are NACKed.  Not modelled: scrolling (the
    commands are taken and ignored), COM pin configuration beyond the
    module's own, multiplex ratio below the panel height, timing.
    """

    MODEL = "ssd1306"
    QUANTITIES = (
        Quantity("display_on", "", 0, 1, False, "bool", settable=False),
        Quantity("contrast", "", 0, 255, 0x7F, "int", settable=False),
        Quantity("inverted", "", 0, 1, False, "bool", settable=False),
    )

    def __init__(self, address: int | None, *, height: Literal[32, 64] = 64,
                 **kw: Any) -> None:
        super().__init__(address, **kw)
        self.height = height
        self.pages = height // 8
        self.reset()

    def reset(self) -> None:
        """Power-on state (§9: reset values); RAM is random on silicon, zero here."""
        self.ram = bytearray(WIDTH * self.pages)
        self.state: dict[str, int] = {
            "on": 0, "contrast": 0x7F, "inverse": 0, "entire": 0, "mode": 2,
            "col_start": 0, "col_end": WIDTH - 1, "page_start": 0, "page_end": self.pages - 1,
            "col": 0, "page": 0, "start_line": 0, "offset": 0, "seg_remap": 0, "com_remap": 0}
        self._ctrl: int | None = None
        self._single = False
        self._cmd: list[int] = []

    def current(self, name: str) -> Value:
        s = self.state
        return {"display_on": bool(s["on"]), "contrast": s["contrast"],
                "inverted": bool(s["inverse"])}[name]

    # -- commands and data ------------------------------------------------------------

    def _command(self, cmd: list[int]) -> None:
        s = self.state
        c = cmd[0]
        if c in (0xAE, 0xAF):
            s["on"] = c & 1
        elif c == 0x81:
            s["contrast"] = cmd[1]
        elif c in (0xA4, 0xA5):
            s["entire"] = c & 1
        elif c in (0xA6, 0xA7):
            s["inverse"] = c & 1
        elif c == 0x20:
            s["mode"] = cmd[1] & 3 if cmd[1] & 3 != 3 else s["mode"]
        elif c == 0x21:
            s["col_start"], s["col_end"] = cmd[1] & 0x7F, cmd[2] & 0x7F
            s["col"] = s["col_start"]
        elif c == 0x22:
            s["page_start"], s["page_end"] = cmd[1] & 7, cmd[2] & 7
            s["page"] = s["page_start"]
        elif 0xB0 <= c <= 0xB7:
            s["page"] = c & 7
        elif c <= 0x0F:
            s["col"] = (s["col"] & 0xF0) | c
        elif c <= 0x1F:
            s["col"] = (s["col"] & 0x0F) | (c & 0x07) << 4
        elif 0x40 <= c <= 0x7F:
            s["start_line"] = c & 0x3F
        elif c == 0xD3:
            s["offset"] = cmd[1] & 0x3F
        elif c in (0xA0, 0xA1):
            s["seg_remap"] = c & 1
        elif c in (0xC0, 0xC8):
            s["com_remap"] = int(c == 0xC8)

    def _data(self, b: int) -> None:
        s = self.state
        page, col = s["page"] % self.pages, s["col"]
        self.ram[page * WIDTH + col] = b
        if s["mode"] == 2:  # page: the column wraps, the page stays
            s["col"] = col + 1 if col < WIDTH - 1 else s["col_start"]
            return
        horizontal = s["mode"] == 0
        inner, outer = ("col", "page") if horizontal else ("page", "col")
        s[inner] += 1
        if s[inner] > s[f"{inner}_end"]:
            s[inner] = s[f"{inner}_start"]
            s[outer] += 1
            if s[outer] > s[f"{outer}_end"]:
                s[outer] = s[f"{outer}_start"]

    def _take(self, b: int, data: bool) -> None:
        if data:
            self._data(b)
            return
        self._cmd.append(b)
        if len(self._cmd) > _ARGS.get(self._cmd[0], 0):
            self._command(self._cmd)
            self._cmd = []

    # -- bus hooks ----------------------------------------------------------------

    def chip_ack(self, read: bool) -> bool:
        return not read

    def start(self, address: int, read: bool) -> None:
        with self.lock:
            self._ctrl = None

    def write(self, data: bytes) -> int:
        with self.lock:
            for b in data:
                if self._ctrl is None:
                    self._ctrl = b
                    self._single = bool(b & 0x80)
                    continue
                self._take(b, bool(self._ctrl & 0x40))
                if self._single:
                    self._ctrl = None
            return len(data)

    # -- what the panel shows -----------------------------------------------------

    def pixels(self) -> list[list[int]]:
        """The panel as rows of 0/1, top row first, as a viewer sees it."""
        s = self.state
        out = []
        for y in range(self.height):
            row = y if s["com_remap"] else self.height - 1 - y
            ram_row = (row + s["start_line"] + s["offset"]) % (self.pages * 8)
            page, bit = divmod(ram_row, 8)
            line = []
            for x in range(WIDTH):
                col = x if s["seg_remap"] else WIDTH - 1 - x
                lit = (self.ram[page * WIDTH + col] >> bit) & 1
                lit = 1 if s["entire"] else lit ^ s["inverse"]
                line.append(lit if s["on"] else 0)
            out.append(line)
        return out

    def screenshot(self, scale: int = 4) -> bytes:
        """What the panel shows, as a PNG, each pixel ``scale`` × ``scale``."""
        if not 1 <= scale <= 16:
            raise ValueError("scale must be 1..16")
        with self.lock:
            rows = self.pixels()
        out: list[bytes] = []
        for line in rows:
            r = bytes(b for v in line for b in (255 * v,) * scale)
            out.extend([r] * scale)
        return png(out, WIDTH * scale)

    def chip_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        """No faults of its own."""
