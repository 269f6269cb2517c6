"""Pure parsing and formatting for the i2c-tools style CLI (no I/O, unit-testable).

The CLI promises to read and print exactly what i2cdetect, i2cget, i2cset and
i2ctransfer do, so scripts and muscle memory carry over.  Everything that
decides *what* an argument means or *how* output looks lives here; the CLI
only connects and sends.

Conventions kept from i2c-tools:

* numbers use C syntax (``strtol(.., 0)``): ``0x48`` hex, ``072`` octal,
  ``72`` decimal — so ``48`` is decimal 48 (0x30), as with i2cget;
* 7-bit chip addresses are limited to 0x03-0x77 unless ``-a`` (0x00-0x7f);
* i2ctransfer descriptors ``{r|w}LENGTH[@ADDRESS]``, the address carrying
  over to later messages, write data with the ``= + - p`` fill suffixes.

One extension: i2ctransfer has no 10-bit addressing (its source leaves it
for "a 't' flag before the address").  Here ``@t0x2a5`` marks a 10-bit
address.  Only that form does: an address above 0x7f written without the
``t`` is refused, since it is far more often an 8-bit address (the 7-bit one
shifted left, as some datasheets print it) than a 10-bit one, and sending it
as 10-bit would talk to a different device.  The same rule holds wherever an
I2C address is written (:func:`parse_i2c_address`: lease scopes too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from protocol import handshake as _hs
from protocol.virtio import I2CMsg, format_i2c_addr, read, write

__all__ = [
    "ADDR_RANGE",
    "ALL_ADDR_RANGE",
    "DETECT_HEADER",
    "GET_MODES",
    "SET_MODES",
    "SMBUS_BLOCK_MAX",
    "I2CArgError",
    "ProbeMode",
    "SetArgs",
    "detect_mode",
    "detect_range",
    "fill_data",
    "format_block",
    "format_detect_grid",
    "format_functionality",
    "format_get",
    "format_hex",
    "format_msgs",
    "format_transfer",
    "functionality_names",
    "parse_chip_address",
    "parse_data_byte",
    "parse_descriptor",
    "parse_get_mode",
    "parse_hex_bytes",
    "parse_i2c_address",
    "parse_number",
    "parse_set",
    "parse_set_args",
    "parse_transfer",
    "probe_kind",
]


class I2CArgError(ValueError):
    """A command-line argument i2c-tools would refuse; the message says which and why."""


# ---------------------------------------------------------------------------
# Numbers and addresses
# ---------------------------------------------------------------------------

_C_INT = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")

#: 7-bit ranges i2c-tools accepts without and with ``-a``.
ADDR_RANGE = (0x03, 0x77)
ALL_ADDR_RANGE = (0x00, 0x7F)
TEN_BIT_MAX = 0x3FF


def parse_number(text: str, what: str = "number", maximum: int | None = None) -> int:
    """A non-negative integer in C syntax, as ``strtol(text, &end, 0)`` with nothing left over."""
    s = text.strip()
    if not _C_INT.fullmatch(s):
        raise I2CArgError(f"{what} {text!r} is not a number (use 0x.. hex, 0.. octal or decimal)")
    value = int(s, 16) if s[:2] in ("0x", "0X") else int(s, 8) if s.startswith("0") else int(s)
    if maximum is not None and value > maximum:
        raise I2CArgError(f"{what} {text!r} out of range (0-{maximum:#x})")
    return value


def _above_7_bits(text: str, addr: int, ten: str | None) -> str:
    """Why an address above 0x7f is refused, and the two things it may have meant."""
    if addr > TEN_BIT_MAX:
        return f"chip address {text!r} out of range (7-bit 0x00-0x7f, 10-bit t0x000-t0x3ff)"
    why = f"chip address {text!r} is not a 7-bit address (0x00-0x7f)"
    if addr <= 0xFF:
        why += f"; as an 8-bit address (R/W bit included) it is 7-bit {addr >> 1:#04x}"
    return why + (f"; a 10-bit address is written {ten}" if ten is not None
                  else "; 10-bit addresses: i2c transfer with @t0x...")


def parse_chip_address(text: str, *, all_addrs: bool = False) -> int:
    """A 7-bit chip address: 0x03-0x77, or 0x00-0x7f with ``-a`` (i2c-tools' rule)."""
    addr = parse_number(text, "chip address")
    if addr > ALL_ADDR_RANGE[1]:
        raise I2CArgError(_above_7_bits(text, addr, None))
    lo, hi = ALL_ADDR_RANGE if all_addrs else ADDR_RANGE
    if not lo <= addr <= hi:
        hint = "" if all_addrs else "; -a allows 0x00-0x7f"
        raise I2CArgError(f"chip address {text!r} out of range ({lo:#04x}-{hi:#04x}{hint})")
    return addr


def parse_i2c_address(text: str, *, all_addrs: bool = False,
                      ten_form: Callable[[str], str] = lambda t: t) -> tuple[int, bool]:
    """``ADDR`` or ``tADDR`` → ``(address, ten_bit)``: 10-bit only in the explicit ``t`` form.

    ``ten_form`` shows how the ``t`` form is written where ``text`` came from (for
    the error message), e.g. ``r2@t0x090`` for the descriptor ``r2@0x90``.
    """
    if text[:1] in ("t", "T"):
        addr = parse_number(text[1:], "10-bit address")
        if addr > TEN_BIT_MAX:
            raise I2CArgError(f"10-bit address {text!r} out of range (0x000-0x3ff)")
        return addr, True
    addr = parse_number(text, "chip address")
    if addr > ALL_ADDR_RANGE[1]:
        raise I2CArgError(_above_7_bits(text, addr, ten_form(f"t{addr:#05x}")))
    return parse_chip_address(text, all_addrs=all_addrs), False


# ---------------------------------------------------------------------------
# i2ctransfer
# ---------------------------------------------------------------------------

Suffix = Literal["", "=", "+", "-", "p"]
_SUFFIXES = "=+-p"
_DESC = re.compile(r"(?P<flags>[a-zA-Z]*?)(?P<dir>[rw])(?P<len>[^@]*)(?:@(?P<addr>.*))?")

#: i2ctransfer's per-message flags: protocol mangling virtio-i2c cannot express.
_MANGLING = {
    "i": "ignore NACK",
    "n": "no master ACK/NACK",
    "p": "STOP after the message",
    "s": "skip repeated START",
    "t": "toggle the read/write bit",
}
MAX_MSG_LEN = 0xFFFF


def parse_data_byte(text: str) -> tuple[int, Suffix]:
    """One i2ctransfer data byte with an optional fill suffix: ``0x10``, ``0xff=``, ``7p``."""
    s = text.strip()
    suffix: Suffix = ""
    if s and s[-1] in _SUFFIXES:
        suffix = s[-1]  # type: ignore[assignment]
        s = s[:-1]
    try:
        value = parse_number(s, "data byte", 0xFF)
    except I2CArgError:
        raise I2CArgError(
            f"invalid data byte {text!r} (0x00-0xff, optionally followed by = + - or p)"
        ) from None
    return value, suffix


def _next_pseudo_random(v: int) -> int:
    # i2ctransfer's generator (8-bit add-xor-rotate, a=13, b=27), kept identical
    # so the same command line writes the same bytes.
    v = ((v ^ 27) + 13) & 0xFF
    return ((v << 1) | (v >> 7)) & 0xFF


def fill_data(value: int, suffix: Suffix, count: int) -> bytes:
    """Expand a suffixed data byte to ``count`` bytes (``count`` 1 for no suffix)."""
    if not suffix:
        return bytes([value])[:count]
    out = bytearray()
    v = value
    for _ in range(count):
        out.append(v)
        if suffix == "+":
            v = (v + 1) & 0xFF
        elif suffix == "-":
            v = (v - 1) & 0xFF
        elif suffix == "p":
            v = _next_pseudo_random(v)
    return bytes(out)


def parse_descriptor(
    text: str, *, last: tuple[int, bool] | None = None, all_addrs: bool = False
) -> tuple[bool, int, int, bool]:
    """``{r|w}LENGTH[@ADDRESS]`` → ``(is_read, length, address, ten_bit)``.

    ``last`` is the address of the previous message, used when ``@`` is omitted.
    """
    m = _DESC.fullmatch(text.strip())
    if m is None:
        raise I2CArgError(f"invalid message descriptor {text!r} (expected {{r|w}}LENGTH[@ADDRESS])")
    for f in m["flags"]:
        if f in _MANGLING:
            raise I2CArgError(
                f"message flag {f!r} ({_MANGLING[f]}) in {text!r} is not supported: "
                "virtio-i2c has no protocol mangling"
            )
        raise I2CArgError(f"unknown message flag {f!r} in {text!r}")
    length_text = m["len"]
    if length_text == "?":
        raise I2CArgError(
            f"variable length ('?') in {text!r} is not supported: virtio-i2c has no "
            "I2C_M_RECV_LEN; read the count byte first, then the data"
        )
    if not length_text:
        raise I2CArgError(f"missing length in {text!r}")
    length = parse_number(length_text, "length", MAX_MSG_LEN)
    if m["addr"] is not None:
        if not m["addr"]:
            raise I2CArgError(f"missing address after '@' in {text!r}")
        head = text.strip()[: -len(m["addr"])]
        addr, ten = parse_i2c_address(m["addr"], all_addrs=all_addrs,
                                      ten_form=lambda t: head + t)
    elif last is None:
        raise I2CArgError(f"no address given in {text!r} (the first message needs @ADDRESS)")
    else:
        addr, ten = last
    return m["dir"] == "r", length, addr, ten


def parse_transfer(args: Sequence[str], *, all_addrs: bool = False) -> list[I2CMsg]:
    """i2ctransfer's ``DESC [DATA] [DESC [DATA]]...`` → messages of one combined transaction."""
    msgs: list[I2CMsg] = []
    last: tuple[int, bool] | None = None
    i = 0
    while i < len(args):
        is_read, length, addr, ten = parse_descriptor(args[i], last=last, all_addrs=all_addrs)
        last = (addr, ten)
        i += 1
        if is_read:
            msgs.append(read(addr, length, ten_bit=ten))
            continue
        data = bytearray()
        while len(data) < length:
            if i >= len(args):
                raise I2CArgError(
                    f"incomplete message w{length}@{format_i2c_addr(addr, ten)}: "
                    f"{length - len(data)} of {length} data bytes missing"
                )
            value, suffix = parse_data_byte(args[i])
            data += fill_data(value, suffix, length - len(data) if suffix else 1)
            i += 1
        msgs.append(write(addr, bytes(data), ten_bit=ten))
    if not msgs:
        raise I2CArgError("no message given (e.g. w1@0x50 0x00 r8)")
    return msgs


def format_block(data: bytes) -> str:
    """Read data as i2ctransfer and i2cget print it: ``0x01 0x17``."""
    return " ".join(f"0x{b:02x}" for b in data)


def format_msgs(msgs: Sequence[I2CMsg], reads: Sequence[bytes] | None = None) -> list[str]:
    """i2ctransfer -v lines: ``msg 0: addr 0x48, write, len 1, buf 0x0f``.

    Without ``reads`` (the confirmation prompt) read buffers are not shown.
    """
    out: list[str] = []
    it = iter(reads or ())
    for k, m in enumerate(msgs):
        addr = f"0x{m.addr:02x}" if not m.ten_bit else f"0x{m.addr:03x} (10-bit)"
        line = f"msg {k}: addr {addr}, {'read' if m.is_read else 'write'}, len {m.size}"
        buf = next(it, b"") if m.is_read else m.data
        if buf:
            line += f", buf {format_block(buf)}"
        out.append(line)
    return out


def format_transfer(msgs: Sequence[I2CMsg], reads: Sequence[bytes], verbose: bool) -> list[str]:
    """What i2ctransfer prints after the transaction: each read as a line, or every message (-v)."""
    if verbose:
        return format_msgs(msgs, reads)
    return [format_block(d) for d in reads if d]


# ---------------------------------------------------------------------------
# i2cget / i2cset
# ---------------------------------------------------------------------------

#: I2C_SMBUS_BLOCK_MAX: the longest i2cget/i2cset block.
SMBUS_BLOCK_MAX = 32

#: i2cget's modes, named as its confirmation prompt names them.
GET_MODES = {"b": "read byte data", "w": "read word data", "c": "write byte/read byte",
             "i": "I2C block read"}
#: i2cset's modes, named as its confirmation prompt names them.
SET_MODES = {"c": "short write", "b": "byte data", "w": "word data", "i": "I2C block write"}


def _check_mode(mode: str, modes: dict[str, str], smbus_block: str) -> None:
    """Refuse what virtio-i2c cannot express (PEC, SMBus block mode 's') and unknown modes."""
    if len(mode) == 2 and mode[1] == "p":
        raise I2CArgError(f"mode {mode!r}: PEC is not supported over virtio-i2c")
    if mode[:1] == "s":
        raise I2CArgError(smbus_block)
    if mode not in modes:
        *first, last = modes
        raise I2CArgError(f"invalid mode {mode!r} ({', '.join(first)} or {last})")


def parse_get_mode(mode: str | None, length: str | None) -> tuple[str, int]:
    """i2cget's ``[MODE [LENGTH]]`` after a REG → (mode, bytes to read).

    b and c read 1 byte, w 2, i LENGTH (default 32).
    """
    m = mode or "b"
    _check_mode(m, GET_MODES, "mode 's' (SMBus block read) needs I2C_M_RECV_LEN, which "
                "virtio-i2c cannot express; use 'i' with a LENGTH")
    if length is not None and m != "i":
        raise I2CArgError("LENGTH is only for mode 'i'")
    if m != "i":
        return m, 2 if m == "w" else 1
    if length is None:
        return m, SMBUS_BLOCK_MAX
    n = parse_number(length, "length")
    if not 1 <= n <= SMBUS_BLOCK_MAX:
        raise I2CArgError(f"length {length!r} out of range (1-{SMBUS_BLOCK_MAX})")
    return m, n


def format_get(mode: str | None, data: bytes) -> str:
    """What i2cget prints: ``0x17``; a word in SMBus order (little-endian), ``0x1701``; a block.

    ``mode`` None is a read without REG (SMBus receive byte).
    """
    if mode == "w":
        return f"0x{int.from_bytes(data, 'little'):04x}"
    if mode == "i":
        return format_block(data)
    return f"0x{data[0]:02x}"


def parse_set_args(rest: Sequence[str]) -> tuple[list[int], str]:
    """i2cset's ``[VALUE] ... [MODE]`` → (values, mode); MODE defaults from the value count."""
    args = list(rest)
    mode = None
    if args and args[-1][:1].isalpha() and args[-1][:1] not in ("0",):
        mode = args.pop()
        _check_mode(mode, SET_MODES, "mode 's' (SMBus block write) is not supported; use "
                    "'i' (I2C block write) for the same bytes without the count")
    if mode is None:
        mode = "c" if not args else "b" if len(args) == 1 else ""
        if not mode:
            raise I2CArgError("several values need mode 'i' (I2C block write)")
    if mode == "c" and args:
        raise I2CArgError("mode 'c' takes no value")
    if mode in ("b", "w") and len(args) != 1:
        raise I2CArgError(f"mode {mode!r} takes exactly one value")
    if mode == "i" and not 1 <= len(args) <= SMBUS_BLOCK_MAX:
        raise I2CArgError(f"mode 'i' takes 1-{SMBUS_BLOCK_MAX} values")
    top = 0xFFFF if mode == "w" else 0xFF
    return [parse_number(v, "value", top) for v in args], mode


@dataclass(frozen=True)
class SetArgs:
    """What one i2cset command line writes to chip ``addr``: every mode is ONE write message.

    Mode c writes REG itself as the value (SMBus send byte), as i2cset does;
    a readback (``-r``, and ``-m``'s first read) reads the register as the mode
    wrote it: b/w write REG and read in one transaction, c reads 1 byte.
    """

    addr: int
    reg: int
    mode: str
    values: tuple[int, ...]
    mask: int | None = None

    @property
    def size(self) -> int:
        """Bytes of the value: 2 for a word, else 1."""
        return 2 if self.mode == "w" else 1

    @property
    def value(self) -> int:
        """The value a b/w/c write stores (before a mask); -1 for a block."""
        return self.reg if self.mode == "c" else self.values[0] if self.mode != "i" else -1

    def hex(self, v: int) -> str:
        return f"0x{v:0{2 * self.size}x}"

    def describe(self) -> str:
        """The confirmation prompt's second line: ``data address 0x0f, data 0x12, mode ...``."""
        data = (" ".join(f"0x{v:02x}" for v in self.values) if self.mode == "i"
                else self.hex(self.value) + (" (masked)" if self.mask is not None else ""))
        return (("" if self.mode == "c" else f"data address {self.reg:#04x}, ")
                + f"data {data}, mode {SET_MODES[self.mode]}.")

    def masked(self, old: int) -> int:
        """The value to write: the bits of MASK from VALUE, the others kept from ``old``."""
        assert self.mask is not None
        return (self.value & self.mask) | (old & ~self.mask)

    def write_msg(self, v: int) -> I2CMsg:
        """The one write message storing ``v`` (``v`` is ignored for a block write)."""
        payload = ([v] if self.mode == "c" else [self.reg, *self.values] if self.mode == "i"
                   else [self.reg, *v.to_bytes(self.size, "little")])
        return write(self.addr, payload)

    def read_msgs(self) -> list[I2CMsg]:
        """The messages that read the register back; their one read is little-endian."""
        if self.mode == "c":
            return [read(self.addr, 1)]
        return [write(self.addr, [self.reg]), read(self.addr, self.size)]

    def mask_line(self, old: int, v: int) -> str:
        """The second prompt of ``-m``: what was read and what will be written."""
        assert self.mask is not None
        return (f"Old value {self.hex(old)}, write mask {self.hex(self.mask)}, "
                f"will write {self.hex(v)}")

    def readback_line(self, v: int, back: int) -> str:
        """i2cset -r's verdict on stdout."""
        if back != v:
            return f"Warning - data mismatch - wrote {self.hex(v)}, read back {self.hex(back)}"
        return f"Value {self.hex(v)} written, readback matched"


def parse_set(addr: int, reg: int, rest: Sequence[str], mask: str | None,
              readback: bool) -> SetArgs:
    """i2cset's ``[-m MASK] [-r] ... REG [VALUE]... [MODE]`` → what to write and check."""
    values, mode = parse_set_args(rest)
    mask_v = None if mask is None else parse_number(mask, "mask", 0xFFFF if mode == "w" else 0xFF)
    if mask_v == 0:
        raise I2CArgError("mask 0 would change nothing")
    if (mask_v is not None or readback) and mode == "i":
        raise I2CArgError("-m and -r are not supported for block writes (mode i)")
    return SetArgs(addr, reg, mode, tuple(values), mask_v)


# ---------------------------------------------------------------------------
# i2cdetect
# ---------------------------------------------------------------------------

DETECT_HEADER = "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f"
ProbeKind = Literal["quick", "read"]
#: How i2cdetect probes: each address its own way (``auto``), or all one way (-q, -r).
ProbeMode = Literal["auto", "quick", "read"]


def detect_mode(quick: bool, readbyte: bool) -> ProbeMode:
    """i2cdetect's ``-q`` / ``-r``: one kind of probe for every address, or neither."""
    if quick and readbyte:
        raise I2CArgError("different modes specified (-q and -r)")
    return "quick" if quick else "read" if readbyte else "auto"


def detect_range(
    first: str | None, last: str | None, *, all_addrs: bool = False
) -> tuple[int, int]:
    """FIRST/LAST of i2cdetect: inside 0x08-0x77 (0x00-0x7f with -a), FIRST <= LAST."""
    lo, hi = (0x00, 0x7F) if all_addrs else (0x08, 0x77)
    a = lo if first is None else parse_number(first, "FIRST")
    if not lo <= a <= hi:
        raise I2CArgError(f"FIRST {first!r} out of range ({lo:#04x}-{hi:#04x})")
    b = hi if last is None else parse_number(last, "LAST")
    if not a <= b <= hi:
        raise I2CArgError(f"LAST {last!r} out of range ({a:#04x}-{hi:#04x})")
    return a, b


def probe_kind(addr: int, mode: ProbeMode = "auto") -> ProbeKind:
    """i2cdetect's default: a 1-byte read where a quick write is known to hurt
    (0x30-0x37, 0x50-0x5f: EEPROMs, whose write-protect a quick write can trip), else quick."""
    if mode != "auto":
        return mode
    return "read" if 0x30 <= addr <= 0x37 or 0x50 <= addr <= 0x5F else "quick"


def format_detect_grid(probed: Collection[int], found: Collection[int]) -> str:
    """The i2cdetect table, byte for byte: ``--`` absent, hex address present, blank unprobed."""
    lines = [DETECT_HEADER]
    for row in range(0, 128, 16):
        cells = []
        for addr in range(row, row + 16):
            if addr not in probed:
                cells.append("   ")
            elif addr in found:
                cells.append(f"{addr:02x} ")
            else:
                cells.append("-- ")
        lines.append(f"{row:02x}: " + "".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Functionality bits
# ---------------------------------------------------------------------------

#: Bits Linux defines that protocol.handshake does not name.
_EXTRA_FUNCS = {"SLAVE": 0x00000020, "SMBUS_HOST_NOTIFY": 0x10000000}


def _func_bits() -> list[tuple[str, int]]:
    named = {
        k.removeprefix("I2C_FUNC_"): v
        for k, v in vars(_hs).items()
        if k.startswith("I2C_FUNC_") and isinstance(v, int) and v and not v & (v - 1)
    }
    named.update(_EXTRA_FUNCS)
    return sorted(named.items(), key=lambda kv: kv[1])


FUNC_BITS = _func_bits()


def functionality_names(bits: int) -> list[str]:
    """Linux I2C_FUNC_* names set in ``bits`` (without the prefix), unknown bits as hex."""
    names = [name for name, bit in FUNC_BITS if bits & bit]
    rest = bits & ~sum(bit for _, bit in FUNC_BITS)
    names += [f"{1 << n:#010x}" for n in range(32) if rest >> n & 1]
    return names


#: i2cdetect -F's rows: its labels, its order.
_F_ROWS = [
    ("I2C", _hs.I2C_FUNC_I2C),
    ("SMBus Quick Command", _hs.I2C_FUNC_SMBUS_QUICK),
    ("SMBus Send Byte", _hs.I2C_FUNC_SMBUS_WRITE_BYTE),
    ("SMBus Receive Byte", _hs.I2C_FUNC_SMBUS_READ_BYTE),
    ("SMBus Write Byte", _hs.I2C_FUNC_SMBUS_WRITE_BYTE_DATA),
    ("SMBus Read Byte", _hs.I2C_FUNC_SMBUS_READ_BYTE_DATA),
    ("SMBus Write Word", _hs.I2C_FUNC_SMBUS_WRITE_WORD_DATA),
    ("SMBus Read Word", _hs.I2C_FUNC_SMBUS_READ_WORD_DATA),
    ("SMBus Process Call", _hs.I2C_FUNC_SMBUS_PROC_CALL),
    ("SMBus Block Write", _hs.I2C_FUNC_SMBUS_WRITE_BLOCK_DATA),
    ("SMBus Block Read", _hs.I2C_FUNC_SMBUS_READ_BLOCK_DATA),
    ("SMBus Block Process Call", _hs.I2C_FUNC_SMBUS_BLOCK_PROC_CALL),
    ("SMBus PEC", _hs.I2C_FUNC_SMBUS_PEC),
    ("I2C Block Write", _hs.I2C_FUNC_SMBUS_WRITE_I2C_BLOCK),
    ("I2C Block Read", _hs.I2C_FUNC_SMBUS_READ_I2C_BLOCK),
    ("SMBus Host Notify", _EXTRA_FUNCS["SMBUS_HOST_NOTIFY"]),
    ("10-bit addressing", _hs.I2C_FUNC_10BIT_ADDR),
    ("Target mode", _EXTRA_FUNCS["SLAVE"]),
    ("Protocol mangling", _hs.I2C_FUNC_PROTOCOL_MANGLING),
    ("Repeated start skipping", _hs.I2C_FUNC_NOSTART),
]


def format_functionality(bits: int) -> list[str]:
    """i2cdetect -F's table: ``I2C                              yes``."""
    return [f"{label:<32} {'yes' if bits & bit else 'no'}" for label, bit in _F_ROWS]


# ---------------------------------------------------------------------------
# SPI byte strings
# ---------------------------------------------------------------------------

_HEX_SEP = re.compile(r"[\s,:]+")
_HEX = re.compile(r"[0-9a-fA-F]+")


def parse_hex_bytes(tokens: Iterable[str]) -> bytes:
    """``9f000000``, ``9f 00 00 00``, ``0x9f 0x00``, ``9f:00`` → bytes.

    A token of one or two hex digits is one byte; a longer one is a run of
    bytes and needs an even number of digits, so nothing is guessed.
    """
    out = bytearray()
    for token in tokens:
        for part in _HEX_SEP.split(token.strip()):
            if not part:
                continue
            digits = part[2:] if part[:2] in ("0x", "0X") else part
            if not _HEX.fullmatch(digits):
                raise I2CArgError(f"{part!r} is not hex bytes (e.g. 9f000000 or 0x9f 0x00)")
            if len(digits) <= 2:
                out.append(int(digits, 16))
            elif len(digits) % 2:
                raise I2CArgError(f"{part!r} has an odd number of hex digits")
            else:
                out += bytes.fromhex(digits)
    return bytes(out)


def format_hex(data: bytes) -> str:
    """SPI data as ``ff ef 40 16``."""
    return data.hex(" ")
