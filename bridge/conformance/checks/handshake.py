"""Handshake and version (SPEC.md §4.1, §4.2, §6), including what may come before HELLO."""

from __future__ import annotations

from typing import Any

from ..board import EEPROM_SCRATCH_OFFSETS, Board, fresh_marker, holds, next_id
from ..model import SpiConfig, check_pong, check_welcome, i2c_frame, rd
from ..registry import DROP, Ctx, Fail, Skip, check
from ..wire import PING, PONG, Conn, frame, frame_body, pack


def _refused(ctx: Ctx, obj: Any, code: str, what: str, raw: bytes | None = None) -> str:
    """A fresh connection sends ``obj`` first; expects a fatal ERROR ``code`` with id 0."""
    c = ctx.raw()
    c.send_bytes(raw if raw is not None else frame(obj))
    _, msg = ctx.expect_error(c, code, 0, fatal=True, what=what)
    return f"ERROR {code} id 0 ({msg!r}), then closed"


def _welcomed(ctx: Ctx, hello: dict[str, Any] | None = None, raw: bytes | None = None) -> Conn:
    c = ctx.raw()
    c.send_bytes(raw if raw is not None else frame([0, 0, hello]))
    f = ctx.recv(c, "WELCOME")
    check_welcome(f)
    return c


@check("hs.welcome", "§4.2 §5.4 §6 §10")
def welcome(ctx: Ctx) -> str:
    """HELLO is answered by a WELCOME with version 1, typed buses and all five limits.

    Also the server's MUSTs on what it advertises: ``max_frame`` >= 4096 (§10) and no
    SPI config with 0b00 in its CPHA or CPOL field (§5.4).
    """
    _welcomed(ctx, ctx.hello_map())
    lim = ctx.limits
    if lim["max_frame"] < 4096:
        raise Fail(f"§10: max_frame {lim['max_frame']} is below 4096")
    for b in ctx.spi_buses():
        mf = SpiConfig.unpack(b["config"]).mode_func_supported
        if not mf & 0x3 or not mf & 0xC:
            raise Fail(f"§5.4: SPI bus {b['name']!r} advertises mode_func_supported "
                       f"{mf:#x}: 0b00 in its CPHA or CPOL field")
    return (f"{len(ctx.i2c_buses())} I2C, {len(ctx.spi_buses())} SPI buses; limits "
            + ", ".join(f"{k}={lim[k]}" for k in sorted(lim)))


@check("hs.version-missing", "§4.1")
def version_missing(ctx: Ctx) -> str:
    """A HELLO without ``version`` is version 1."""
    _welcomed(ctx, ctx.hello_map(version=DROP))
    return "HELLO without version: WELCOME"


@check("hs.unknown-keys", "§3 §4.1")
def unknown_keys(ctx: Ctx) -> str:
    """Unknown HELLO keys are ignored and keys may come in any order."""
    m = ctx.hello_map()
    reordered = {"x-future": [1, {"a": b"\x00"}], **{k: m[k] for k in reversed(list(m))}}
    _welcomed(ctx, reordered)
    return "keys reversed plus an unknown key: WELCOME"


@check("hs.int-width", "§3")
def int_width(ctx: Ctx) -> str:
    """Any width encoding of an integer is accepted (version as ``cd 00 01``, id as ``ce``)."""
    rest = ctx.hello_map(version=DROP)
    body = b"\x93\xcc\x00\xce\x00\x00\x00\x00" + bytes([0x80 | (len(rest) + 1)]) + \
        pack("version") + b"\xcd\x00\x01" + b"".join(pack(k) + pack(v) for k, v in rest.items())
    c = _welcomed(ctx, raw=frame_body(body))
    rid = next_id()
    bus = Board(ctx).need_i2c()
    wide = b"\x95\xd0\x02\xce" + rid.to_bytes(4, "big") + pack(bus) + \
        pack([[b"\xee\x00\x00\x00\x02\x00\x00\x00", 0]]) + b"\xcd\x03\xe8"
    c.send_bytes(frame_body(wide))
    f = ctx.recv(c, "a RESULT for an I2C frame with wide integers")
    if f.type != 4 or f.id != rid:
        raise Fail(f"I2C frame with int8/uint32/uint16 encodings: got {f.brief()}")
    return "HELLO with uint8/uint32/uint16 encodings accepted; I2C frame too"


@check("hs.version-2", "§6 §9")
def version_2(ctx: Ctx) -> str:
    """A HELLO with version 2 gets a fatal ``unsupported-version``."""
    return _refused(ctx, [0, 0, ctx.hello_map(version=2)], "unsupported-version", "version 2")


@check("hs.version-0", "§6 §9")
def version_0(ctx: Ctx) -> str:
    """Version 0 is not 1 either."""
    return _refused(ctx, [0, 0, ctx.hello_map(version=0)], "unsupported-version", "version 0")


@check("hs.not-a-map", "§6 §9")
def not_a_map(ctx: Ctx) -> str:
    """A HELLO whose item 2 is not a map is a fatal ``malformed``."""
    return _refused(ctx, [0, 0, "hello"], "malformed", "HELLO with a str for its map")


@check("hs.short-hello", "§6 §9.2 §9.3 row 6")
def short_hello(ctx: Ctx) -> str:
    """``[0]`` (one item) is an invalid HELLO: fatal ``malformed``, id 0."""
    return _refused(ctx, [0], "malformed", "the 1-item HELLO [0]")


@check("hs.long-hello", "§4 §6 §9")
def long_hello(ctx: Ctx) -> str:
    """A HELLO with 4 items is an invalid HELLO: fatal ``malformed``, id 0."""
    return _refused(ctx, [0, 0, ctx.hello_map(), 1], "malformed", "a 4-item HELLO")


@check("hs.client-256", "§4.1 §10")
def client_256(ctx: Ctx) -> str:
    """``client`` of 256 characters is accepted; 257 is a fatal ``malformed``."""
    _welcomed(ctx, ctx.hello_map(client="c" * 256))
    r = _refused(ctx, [0, 0, ctx.hello_map(client="c" * 257)], "malformed", "client of 257")
    return f"256: WELCOME; 257: {r}"


@check("hs.client-type", "§4.1 §6")
def client_type(ctx: Ctx) -> str:
    """``client`` that is not a str is a wrong type: fatal ``malformed``."""
    return _refused(ctx, [0, 0, ctx.hello_map(client=5)], "malformed", "client = 5")


@check("hs.token-257", "§4.1 §9.3 row 11")
def token_257(ctx: Ctx) -> str:
    """A ``token`` of 257 characters is a too-long token: fatal ``malformed``."""
    return _refused(ctx, [0, 0, ctx.hello_map(token="t" * 257)], "malformed", "token of 257")


@check("hs.token-empty", "§4.1 §9.3 row 11")
def token_empty(ctx: Ctx) -> str:
    """A ``token`` of 0 characters is outside 1..256: fatal ``malformed``."""
    return _refused(ctx, [0, 0, ctx.hello_map(token="")], "malformed", 'token ""')


@check("hs.token-nil", "§3 §4.1 §9.3 row 11")
def token_nil(ctx: Ctx) -> str:
    """``token: nil`` is a wrong type (senders never send nil): fatal ``malformed``."""
    return _refused(ctx, [0, 0, ctx.hello_map(token=None)], "malformed", "token nil")


@check("hs.token-ignored", "§4.1 §6")
def token_ignored(ctx: Ctx) -> str:
    """A server without tokens ignores a well-formed ``token`` (256 characters)."""
    if ctx.target.token is not None:
        raise Skip("the target requires a token; sec.* checks cover a wrong one")
    _welcomed(ctx, ctx.hello_map(token="t" * 256))
    return "token of 256 characters on a server without tokens: WELCOME"


def _lease_token(n: int, ch: str = "k") -> str:
    return (ch * n)[:n]


@check("hs.leases-16", "§4.1")
def leases_16(ctx: Ctx) -> str:
    """16 unknown lease tokens of 16 and 128 characters are ignored; 17 are ``malformed``."""
    toks = [_lease_token(16, chr(ord("a") + i)) for i in range(15)] + [_lease_token(128)]
    _welcomed(ctx, ctx.hello_map(leases=toks))
    r = _refused(ctx, [0, 0, ctx.hello_map(leases=[*toks, "z" * 16])], "malformed",
                 "17 lease tokens")
    return f"16 tokens: WELCOME; 17: {r}"


@check("hs.lease-token-length", "§4.1")
def lease_token_length(ctx: Ctx) -> str:
    """A lease token of 15 or 129 characters makes the HELLO ``malformed`` (fatal)."""
    a = _refused(ctx, [0, 0, ctx.hello_map(leases=["s" * 15])], "malformed", "15-char token")
    _refused(ctx, [0, 0, ctx.hello_map(leases=["s" * 129])], "malformed", "129-char token")
    return f"15 and 129 characters: {a}"


@check("hs.lease-token-ascii", "§4.1")
def lease_token_ascii(ctx: Ctx) -> str:
    """A lease token with a non-printable or non-ASCII character is ``malformed`` (fatal)."""
    _refused(ctx, [0, 0, ctx.hello_map(leases=["abcdefgh\x01jklmnop"])], "malformed",
             "a token with \\x01")
    return _refused(ctx, [0, 0, ctx.hello_map(leases=["abcdefghéjklmnop"])], "malformed",
                    "a token with é")


@check("hs.second-hello", "§6 §9.2 §9.3 row 8")
def second_hello(ctx: Ctx) -> str:
    """A second HELLO is a fatal ``malformed`` with id 0."""
    c = ctx.open()
    c.send([0, 0, ctx.hello_map()])
    _, msg = ctx.expect_error(c, "malformed", 0, fatal=True, what="a second HELLO")
    return f"ERROR malformed id 0 ({msg!r}), then closed"


@check("hs.i2c-before-hello", "§6 §9 §12.15")
def i2c_before_hello(ctx: Ctx) -> str:
    """An I2C frame before HELLO: fatal ``handshake-required``, id 0."""
    bus = Board(ctx).need_i2c()
    return _refused(ctx, i2c_frame(next_id(), bus, [rd(0x48, 1)]), "handshake-required",
                    "an I2C frame before HELLO")


@check("hs.spi-before-hello", "§6 §9")
def spi_before_hello(ctx: Ctx) -> str:
    """An SPI frame before HELLO: fatal ``handshake-required``, id 0."""
    return _refused(ctx, [3, next_id(), "0", 0, [[bytes(32), None, 1]], None],
                    "handshake-required", "an SPI frame before HELLO")


@check("hs.lease-before-hello", "§6 §9")
def lease_before_hello(ctx: Ctx) -> str:
    """A LEASE frame before HELLO: fatal ``handshake-required``, id 0."""
    return _refused(ctx, [8, next_id(), "list", {}], "handshake-required",
                    "a LEASE frame before HELLO")


@check("hs.admin-before-hello", "§4.10 §6 §9.3 row 10")
def admin_before_hello(ctx: Ctx) -> str:
    """An ADMIN frame before HELLO (a request frame on every server): fatal
    ``handshake-required``, id 0."""
    return _refused(ctx, [10, next_id(), "sim.devices", {}], "handshake-required",
                    "an ADMIN frame before HELLO")


@check("hs.result-before-hello", "§6 §9.2 §9.3 row 7")
def result_before_hello(ctx: Ctx) -> str:
    """A client-sent RESULT before HELLO: fatal ``malformed``, id 0 (fatal errors carry 0)."""
    return _refused(ctx, [4, 1, b"\x00", [], []], "malformed", "a RESULT before HELLO")


@check("hs.unknown-type-before-hello", "§6 §9.2 §9.3 row 7")
def unknown_type_before_hello(ctx: Ctx) -> str:
    """Frame type 99 (unassigned) before HELLO: fatal ``malformed``, id 0."""
    return _refused(ctx, [99, 1], "malformed", "frame type 99 before HELLO")


@check("hs.welcome-from-client", "§6 §9.2 §9.3 row 7")
def welcome_from_client(ctx: Ctx) -> str:
    """A client-sent WELCOME before HELLO: fatal ``malformed``, id 0."""
    return _refused(ctx, [1, 0, {"version": 1}], "malformed", "a WELCOME from the client")


@check("hs.ping-before-hello", "§4.7 §6")
def ping_before_hello(ctx: Ctx) -> str:
    """PING before HELLO is answered with PONG; the handshake still works afterwards."""
    c = ctx.raw()
    c.send([PING, 77])
    check_pong(ctx.recv(c, "PONG to a PING before HELLO"), 77)
    c.send([0, 0, ctx.hello_map()])
    check_welcome(ctx.recv(c, "WELCOME after the PING"))
    return "PONG 77, then WELCOME"


@check("hs.pong-before-hello", "§4.7 §6")
def pong_before_hello(ctx: Ctx) -> str:
    """A PONG before HELLO is not answered and does not end the connection."""
    c = ctx.raw()
    c.send([PONG, 5])
    c.send([PING, 6])
    f = ctx.recv(c, "PONG 6")
    check_pong(f, 6)
    c.send([0, 0, ctx.hello_map()])
    check_welcome(ctx.recv(c, "WELCOME"))
    return "no answer to the PONG; PING 6 answered next; WELCOME"


@check("hs.garbage-before-hello", "§6 §9.2 §9.3 row 4")
def garbage_before_hello(ctx: Ctx) -> str:
    """A non-msgpack body before HELLO: fatal ``malformed``, id 0; a HELLO behind it: no WELCOME."""
    return _fatal_before_hello(ctx, frame_body(b"\xc1\xc1\xc1"), "a non-msgpack body")


@check("hs.empty-frame-before-hello", "§2 §6 §9.2 §9.3 row 3")
def empty_before_hello(ctx: Ctx) -> str:
    """An empty frame before HELLO: fatal ``malformed``, id 0; a HELLO behind it: no WELCOME."""
    return _fatal_before_hello(ctx, b"\x00\x00\x00\x00", "an empty frame")


@check("hs.ping-arity-before-hello", "§4.7 §9.2 §9.3 row 9")
def ping_arity_before_hello(ctx: Ctx) -> str:
    """``[6, 5, 5]`` before HELLO: fatal ``malformed``, id 0; a HELLO behind it: no WELCOME."""
    return _fatal_before_hello(ctx, frame([PING, 5, 5]), "the 3-item PING")


def _fatal_before_hello(ctx: Ctx, data: bytes, what: str) -> str:
    """§9.2: ``data`` then a valid HELLO in one write: one ERROR, then the close."""
    c = ctx.raw()
    c.send_bytes(data + frame([0, 0, ctx.hello_map()]))
    _, msg = ctx.expect_error(c, "malformed", 0, fatal=True, what=f"{what} before HELLO")
    return f"ERROR malformed id 0 ({msg[:60]!r}), then closed; the HELLO behind it unanswered"


@check("hs.nothing-behind-fatal", "§6 §9.2")
def nothing_behind_fatal(ctx: Ctx) -> str:
    """Garbage, a HELLO and an EEPROM write in one write: one ERROR, close; the write never ran."""
    board = Board(ctx)
    bus = board.eeprom()[0]
    probe = ctx.open()
    where = EEPROM_SCRATCH_OFFSETS["behind-fatal"]
    mark = fresh_marker(board, probe, where)
    write = frame(i2c_frame(next_id(), bus, [board.eeprom_msg(where, bytes([mark]))]))
    c = ctx.raw()
    c.send_bytes(frame_body(b"\xc1") + frame([0, 0, ctx.hello_map()]) + write)
    ctx.expect_error(c, "malformed", 0, fatal=True, what="garbage before HELLO")
    if holds(board, probe, where, mark):
        raise Fail("the EEPROM write behind a fatal refusal (and a HELLO) ran")
    return "ERROR malformed id 0, closed; the HELLO and the write behind it never ran"


def _hello_typed(name: str, key: str, value: Any, code: str, doc: str) -> None:
    """Register a check: a HELLO whose ``key`` is ``value`` gets a fatal ``code``, id 0."""

    def fn(ctx: Ctx) -> str:
        return _refused(ctx, [0, 0, ctx.hello_map(**{key: value})], code, doc)

    fn.__doc__ = f"HELLO {doc}: fatal ``{code}``, id 0."
    check(name, "§3 §6 §9.3 row 11")(fn)


_hello_typed("hs.version-float", "version", 1.0, "malformed", "version 1.0 (a float)")
_hello_typed("hs.version-true", "version", True, "malformed", "version true (a bool)")
_hello_typed("hs.version-str", "version", "1", "malformed", 'version "1" (a str)')
_hello_typed("hs.client-bin", "client", b"kit", "malformed", "client as bin (text expected)")


@check("hs.map-65", "§6 §9.2 §9.3 row 5 §10")
def map_65(ctx: Ctx) -> str:
    """A HELLO map of 65 pairs breaks a decoding bound: fatal ``limit-exceeded``, id 0."""
    m = ctx.hello_map()
    m.update({f"x-{i}": i for i in range(65 - len(m))})
    return _refused(ctx, [0, 0, m], "limit-exceeded", "a HELLO map of 65 pairs")


@check("hs.lease-token-space", "§4.1")
def lease_token_space(ctx: Ctx) -> str:
    """A lease token of 16 characters with a space (0x20 is printable ASCII): WELCOME."""
    _welcomed(ctx, ctx.hello_map(leases=["abcdefgh jklmnop"]))
    return "lease token 'abcdefgh jklmnop' (unknown, well-formed): WELCOME"


@check("hs.pipelined-hello", "§6")
def pipelined_hello(ctx: Ctx) -> str:
    """A request sent right behind HELLO (same write) is accepted and answered."""
    bus = Board(ctx).need_i2c()
    rid = next_id()
    c = ctx.raw()
    c.send_bytes(frame([0, 0, ctx.hello_map()]) + frame(i2c_frame(rid, bus, [rd(0x08, 0)])))
    check_welcome(ctx.recv(c, "WELCOME"))
    f = ctx.recv(c, "the RESULT of the pipelined request")
    if f.type != 4 or f.id != rid:
        raise Fail(f"expected RESULT {rid}, got {f.brief()}")
    return "WELCOME, then the RESULT"
