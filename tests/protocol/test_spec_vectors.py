"""SPEC.md's test vectors are what the implementation really sends and accepts.

Every ```vector block in ``protocol/SPEC.md`` is decoded by a ``Connection`` of the
receiving role and compared with the event this file expects under that name, then
the event is encoded again and must give the very same bytes.  Editing a hex digit
in SPEC.md, adding a vector without teaching it here, or changing the encoder all
fail.  The ```annotated blocks (the byte-by-byte explanations) must add up to their
vector's bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from protocol_pair import answering, expecting, handshake, put_in_flight, subscribe

import protocol
from protocol import (
    Connection,
    Error,
    ErrorCode,
    Event,
    Failure,
    Hello,
    HelloInfo,
    I2CBusInfo,
    I2CMsg,
    I2CRequest,
    LeaseInfo,
    LeaseOp,
    LeaseRequest,
    LeaseResult,
    LimitsInfo,
    Ping,
    Pong,
    Result,
    Role,
    SpiBusInfo,
    SpiConfig,
    SpiMode,
    SpiRequest,
    SpiTransfer,
    SpiTransferHead,
    Welcome,
    WelcomeInfo,
    chain,
    check_spi_transfer,
    encode_body,
    frame,
    read,
    write,
)
from protocol.admin import AdminEvent, AdminRequest, AdminResult
from protocol.connection import NEED_DATA
from protocol.errors import ProtocolError
from protocol.refusals import peek_id
from protocol.virtio import I2C_FLAGS_FAIL_NEXT, SPI_CONFIG_SIZE, SPI_TRANSFER_HEAD_SIZE

SPEC = Path(protocol.__file__).with_name("SPEC.md")

# -- the events the vectors must encode -----------------------------------------------

SPI_CONFIG = SpiConfig(
    cs_max_number=2,
    cs_change_supported=1,
    tx_nbits_supported=0,
    rx_nbits_supported=0,
    bits_per_word_mask=0x80,
    mode_func_supported=0x0F,
    max_freq_hz=10_000_000,
    max_word_delay_ns=1000,
    max_cs_setup_ns=10_000,
    max_cs_hold_ns=10_000,
    max_cs_inactive_ns=10_000,
)
FULL_DUPLEX_HEAD = SpiTransferHead(
    chip_select_id=1,
    bits_per_word=8,
    cs_change=0,
    tx_nbits=1,
    rx_nbits=1,
    mode=SpiMode.CPHA | SpiMode.CPOL,
    freq=1_000_000,
    word_delay_ns=100,
    cs_setup_ns=1000,
    cs_delay_hold_ns=2000,
    cs_change_delay_inactive_ns=3000,
)
PLAIN_HEAD = SpiTransferHead(chip_select_id=0, bits_per_word=8, freq=500_000)
TOKEN = "q3JvZkQ1bXlfc2VjcmV0X3Rva2Vu"
LEASE_50 = LeaseInfo("7f3a9c1e", "i2c", "1", 0x50, None, "ci job 7", "10.0.0.5", 60,
                     "2026-12-01T08:01:00.000Z", 60000, False, "token:ci")
LEASE_CS1 = LeaseInfo("c0ffee01", "spi", "0", None, 1, "nightly", "10.0.0.6", 300,
                      "2026-12-01T08:04:00.000Z", 240000, False, "cn:lab-pc")

CLIENT_TO_SERVER: dict[str, Event] = {
    "hello": Hello(HelloInfo(version=1, client="agent")),
    "hello-with-token": Hello(HelloInfo(version=1, client="ci", token="s3cret-t0ken")),
    "i2c-register-read": I2CRequest(1, "1", tuple(chain([write(0x48, [0x0F]), read(0x48, 2)]))),
    "i2c-probe-zero-length-write": I2CRequest(2, "1", (write(0x3C),)),
    "i2c-10bit-write": I2CRequest(3, "1", (write(0x2A5, [0x01, 0x02], ten_bit=True),)),
    "i2c-two-chains-read-only": I2CRequest(
        4, "1", (*chain([read(0x50, 1), read(0x50, 1)]), read(0x51, 2)), timeout_ms=250
    ),
    "spi-full-duplex": SpiRequest(
        5, "0", 1, (SpiTransfer(FULL_DUPLEX_HEAD, bytes([0x9F, 0, 0, 0]), 4),)
    ),
    "spi-write-then-half-duplex-read": SpiRequest(
        6,
        "0",
        0,
        (SpiTransfer(PLAIN_HEAD, bytes([0x03, 0x00, 0x10]), 0), SpiTransfer(PLAIN_HEAD, None, 4)),
    ),
    "ping": Ping(1),
    "lease-take": LeaseRequest(10, LeaseOp.TAKE, kind="i2c", bus="1", address=0x50, ttl=60,
                               holder="ci job 7"),
    "hello-with-lease": Hello(HelloInfo(version=1, client="run", leases=[TOKEN])),
    "lease-renew": LeaseRequest(11, LeaseOp.RENEW, token=TOKEN, ttl=120),
    "lease-release": LeaseRequest(12, LeaseOp.RELEASE, token=TOKEN),
    "lease-list": LeaseRequest(13, LeaseOp.LIST),
    "lease-list-after": LeaseRequest(16, LeaseOp.LIST, after="2"),
    "lease-take-10bit": LeaseRequest(15, LeaseOp.TAKE, kind="i2c", bus="2", address=0x50,
                                     ttl=60, ten_bit=True),
    "admin-sim-set": AdminRequest(20, "sim.set", {"kind": "i2c", "bus": "1", "addr": 0x48,
                                                  "values": {"temperature": 31.25}}),
    "admin-trace-start": AdminRequest(21, "trace.start", {"bus": "1"}),
    "admin-trace-stop": AdminRequest(22, "trace.stop", {"id": 21}),
}

SMALL_LIMITS = LimitsInfo(max_frame=65536, max_requests=16, max_i2c_len=256, max_spi_len=4096,
                          max_in_flight=32)
TRACE_EVENT = {
    "t": 1764576060.25, "client": "lab", "name": "ci", "peer": "10.0.0.5:40100", "id": 7,
    "kind": "i2c", "bus": "1",
    "msgs": [{"addr": 0x48, "ten_bit": False, "rw": "w", "len": 1, "data": b"\x00",
              "status": 0, "end": False},
             {"addr": 0x48, "ten_bit": False, "rw": "r", "len": 2, "data": b"\x0f\xa0",
              "status": 0, "end": True}],
    "failures": [], "dur_us": 180, "ran": True,
}

SERVER_TO_CLIENT: dict[str, Event] = {
    "welcome-small-board": Welcome(
        WelcomeInfo(
            version=1,
            server="busbridge 0.1.0",
            board="demo",
            i2c=[I2CBusInfo(name="1", functionality=0x0EFF0009, max_msg_len=8192)],
            spi=[SpiBusInfo(name="0", config=SPI_CONFIG)],
            limits=LimitsInfo(
                max_frame=65536,
                max_requests=16,
                max_i2c_len=256,
                max_spi_len=4096,
                max_in_flight=32,
            ),
        )
    ),
    "result-i2c-ok": Result(1, b"\x00\x00", [b"\x1a\x80"], []),
    "result-i2c-chain-failure": Result(
        7, b"\x00\x01\x01", [b""], [Failure(1, 121, "i2c bus 1, message 1 (w2@0x50): data NACK")]
    ),
    "result-i2c-timeout": Result(2, b"\x01", [], [Failure(0, 110, "i2c bus 1: deadline passed")]),
    "result-spi-full-duplex-ok": Result(5, b"\x00", [b"\xff\xef\x40\x18"], []),
    "result-spi-param-err": Result(
        8,
        b"\x02\x01\x02",
        [b"", b""],
        [Failure(1, 22, "spi bus 0 cs 0, transfer 1: bits_per_word 12 not in mask 0x80")],
    ),
    "result-spi-param-err-two": Result(
        10,
        b"\x01\x02\x01",
        [],
        [Failure(0, 22, "spi bus 0 cs 0, transfer 0: bits_per_word 12 not in mask 0x80"),
         Failure(2, 22, "spi bus 0 cs 0, transfer 2: cs_change 2 is not 0 or 1")],
    ),
    "error-unknown-bus": Error(9, ErrorCode.UNKNOWN_BUS, "no I2C bus '7' on board 'demo'"),
    "error-handshake-required": Error(0, ErrorCode.HANDSHAKE_REQUIRED, "send HELLO first"),
    "error-unauthorized": Error(0, ErrorCode.UNAUTHORIZED, "invalid token"),
    "error-denied": Error(
        3,
        ErrorCode.DENIED,
        "access rule 0 (client 'ci', i2c:1 0x48, read-only) forbids writes: "
        "i2c bus '1' address 0x48 (message 0)",
    ),
    "pong": Pong(1),
    "lease-result-take": LeaseResult(10, [LEASE_50], token=TOKEN),
    "error-busy": Error(14, ErrorCode.BUSY, 'busy: i2c bus 1 address 0x50 held by "ci job 7" '
                        "(token:ci) until 2026-12-01T08:01:00.000Z (lease 7f3a9c1e)"),
    "lease-result-list-page": LeaseResult(13, [LEASE_CS1], total=2, next="2"),
    "lease-result-release": LeaseResult(12, [], released=True),
    "welcome-admin": Welcome(WelcomeInfo(server="busbridge 0.1.0", board="demo",
                                         limits=SMALL_LIMITS, capabilities=["admin"])),
    "admin-result-sim-set": AdminResult(20, {"values": {"temperature": 31.25}}),
    "admin-result-trace-start": AdminResult(21, {"queue": 256}),
    "event-trace-i2c": AdminEvent(21, TRACE_EVENT),
    "event-dropped": AdminEvent(21, {"kind": "dropped", "count": 3}),
    "admin-result-empty": AdminResult(22, {}),
    "error-malformed-77": Error(77, ErrorCode.MALFORMED,
                                "undecodable frame: the body ends inside its msgpack object"),
    "error-malformed-0": Error(0, ErrorCode.MALFORMED, "PING frame must be [6, id]"),
}

#: Frames a server must refuse: the state it is in, the ERROR vector whose id and code
#: the refusal has, and whether it is fatal (SPEC.md §12.19).
REFUSED: dict[str, tuple[str, str, bool]] = {
    "refused-truncated": ("open", "error-malformed-77", False),
    "refused-ext-type": ("open", "error-malformed-77", False),
    "refused-ping-arity": ("open", "error-malformed-0", False),
    "refused-unknown-type": ("open", "error-malformed-0", False),
    "refused-result-before-hello": ("before-hello", "error-malformed-0", True),
    "refused-hello-token-nil": ("before-hello", "error-malformed-0", True),
}

STRUCTS: dict[str, I2CMsg | SpiTransferHead | SpiConfig] = {
    "out-hdr-7bit": I2CMsg(0x48, I2C_FLAGS_FAIL_NEXT),
    "out-hdr-10bit": read(0x2A5, 0, ten_bit=True),
    "spi-transfer-head": FULL_DUPLEX_HEAD,
    "spi-config": SPI_CONFIG,
}

ROLES: dict[str, Mapping[str, object]] = {
    "client-to-server": CLIENT_TO_SERVER,
    "server-to-client": SERVER_TO_CLIENT,
    "struct": STRUCTS,
    "refused": REFUSED,
}

# -- parsing SPEC.md --------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    name: str
    role: str
    data: bytes
    fields: dict[str, str]


_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _hex(text: str, where: str) -> bytes:
    tokens = text.split()
    bad = [t for t in tokens if not re.fullmatch(r"[0-9a-fA-F]{2}", t)]
    assert not bad, f"{where}: not hex bytes: {bad[:5]}"
    return bytes(int(t, 16) for t in tokens)


def parse_vectors(text: str) -> list[Vector]:
    vectors = []
    for m in _BLOCK.finditer(text):
        if m.group(1) != "vector":
            continue
        fields: dict[str, str] = {}
        key = ""
        hex_lines: list[str] = []
        for line in m.group(3).splitlines():
            if hex_lines:  # everything after "hex:" is hex
                hex_lines.append(line)
                continue
            km = re.match(r"^([a-z_]+):\s?(.*)$", line)
            if km:
                key = km.group(1)
                if key == "hex":
                    hex_lines.append(km.group(2))
                    continue
                fields[key] = km.group(2)
            elif line.strip() and key:  # continuation of a long value
                fields[key] += " " + line.strip()
        assert "name" in fields, f"vector without a name: {m.group(0)}"
        assert "role" in fields, f"vector without a role: {m.group(0)}"
        assert hex_lines, f"vector {fields['name']} has no hex line"
        vectors.append(
            Vector(fields["name"], fields["role"], _hex(" ".join(hex_lines), fields["name"]),
                   fields)
        )
    return vectors


def parse_annotations(text: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for m in _BLOCK.finditer(text):
        if m.group(1) != "annotated":
            continue
        name = m.group(2).strip()
        assert name not in out, f"two annotated blocks for {name}"
        parts = [line.split("#", 1)[0] for line in m.group(3).splitlines()]
        out[name] = _hex(" ".join(parts), f"annotated {name}")
    return out


SPEC_TEXT = SPEC.read_text(encoding="utf-8")
VECTORS = parse_vectors(SPEC_TEXT)
ANNOTATIONS = parse_annotations(SPEC_TEXT)
BY_NAME = {v.name: v for v in VECTORS}


# -- helpers ---------------------------------------------------------------------------------


def decode_one(role: Role, data: bytes, expect: Event) -> Event:
    """Decode ``data`` as the receiving role would, in a state that accepts it."""
    conn = Connection(role)
    if not isinstance(expect, Hello | Welcome):
        handshake(conn)
    if isinstance(expect, Result):
        expecting(conn, expect)  # the client sent a request this RESULT fits (§4.5)
    elif isinstance(expect, Error | LeaseResult | AdminResult) and expect.id:
        put_in_flight(conn, [expect.id])  # the client sent that request
    if isinstance(expect, AdminEvent):
        subscribe(conn, expect.id)  # the client opened that subscription
    conn.receive_data(data)
    ev = conn.next_event()
    assert conn.next_event() is NEED_DATA, "a vector must hold exactly one frame"
    assert conn.buffered == 0
    assert ev is not NEED_DATA
    assert ev is not None
    return ev  # type: ignore[return-value]


# -- the tests --------------------------------------------------------------------------------


def test_spec_md_ships_with_the_package() -> None:
    assert SPEC.is_file()
    assert len(VECTORS) >= 20


def test_every_vector_is_known_and_every_expected_vector_is_in_the_spec() -> None:
    names = [v.name for v in VECTORS]
    assert len(names) == len(set(names)), "duplicate vector names in SPEC.md"
    expected = {n for table in ROLES.values() for n in table}
    assert set(names) - expected == set(), "SPEC.md has vectors this test does not know"
    assert expected - set(names) == set(), "vectors missing from SPEC.md"
    for v in VECTORS:
        assert v.role in ROLES, f"{v.name}: unknown role {v.role!r}"
        assert v.name in ROLES[v.role], f"{v.name}: listed under the wrong role {v.role!r}"


@pytest.mark.parametrize("name", sorted(CLIENT_TO_SERVER))
def test_client_to_server_vector(name: str) -> None:
    v = BY_NAME[name]
    expect = CLIENT_TO_SERVER[name]
    assert decode_one(Role.SERVER, v.data, expect) == expect
    assert frame(encode_body(expect)) == v.data


@pytest.mark.parametrize("name", sorted(SERVER_TO_CLIENT))
def test_server_to_client_vector(name: str) -> None:
    v = BY_NAME[name]
    expect = SERVER_TO_CLIENT[name]
    assert decode_one(Role.CLIENT, v.data, expect) == expect
    assert frame(encode_body(expect)) == v.data


@pytest.mark.parametrize("name", sorted(CLIENT_TO_SERVER))
def test_client_sends_exactly_the_vector(name: str) -> None:
    """What a client Connection writes (not just the bare encoder) is the vector."""
    expect = CLIENT_TO_SERVER[name]
    assert Connection(Role.CLIENT).send(expect) == BY_NAME[name].data


@pytest.mark.parametrize("name", sorted(SERVER_TO_CLIENT))
def test_server_sends_exactly_the_vector(name: str) -> None:
    expect = SERVER_TO_CLIENT[name]
    rid = getattr(expect, "id", 0)
    if isinstance(expect, AdminEvent):  # an EVENT only for an open subscription
        conn = subscribe(handshake(Connection(Role.SERVER)), expect.id)
    else:  # an answer only to a request received
        conn = answering(rid) if rid else handshake(Connection(Role.SERVER))
    assert conn.send(expect) == BY_NAME[name].data


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_vector(name: str) -> None:
    """The server refuses the frame exactly as the vector says: id, code, fatality."""
    v = BY_NAME[name]
    state, answer, fatal = REFUSED[name]
    assert (v.fields["state"], v.fields["answer"], v.fields["fatal"]) == (
        state, answer, "yes" if fatal else "no")
    expect = SERVER_TO_CLIENT[answer]
    assert isinstance(expect, Error)
    conn = Connection(Role.SERVER)
    if state == "open":
        handshake(conn)
    (got, *rest) = conn.receive(v.data)
    assert rest == []
    assert isinstance(got, ProtocolError)
    assert (got.code, got.request_id, got.fatal) == (expect.code, expect.id, fatal)
    assert conn.closed is fatal
    assert peek_id(v.data[4:]) == (0 if fatal else expect.id)


def test_the_ext_type_is_the_only_thing_wrong_with_its_refused_vector() -> None:
    body = BY_NAME["refused-ext-type"].data[4:]
    ext = bytes.fromhex("d6ff00000000")
    assert body.endswith(ext)
    fixed = body[: -len(ext)] + b"\xc0"  # timeout_ms nil instead
    (ev,) = handshake(Connection(Role.SERVER)).receive(frame(fixed))
    assert ev == I2CRequest(77, "1", (write(0x3C),))


def test_length_prefix_of_every_frame_vector_is_its_body_length() -> None:
    for v in VECTORS:
        if v.role != "struct":
            assert int.from_bytes(v.data[:4], "big") == len(v.data) - 4, v.name


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_vector(name: str) -> None:
    v = BY_NAME[name]
    expect = STRUCTS[name]
    if isinstance(expect, I2CMsg):
        assert len(v.data) == 8
        assert expect.out_hdr() == v.data
        buf: bytes | int = 0 if expect.is_read else b""
        assert I2CMsg.from_out_hdr(v.data, buf) == expect
    elif isinstance(expect, SpiTransferHead):
        assert len(v.data) == SPI_TRANSFER_HEAD_SIZE
        assert SpiTransferHead.unpack(v.data) == expect
        assert expect.pack() == v.data
    else:
        assert len(v.data) == SPI_CONFIG_SIZE
        assert SpiConfig.unpack(v.data) == expect
        assert expect.pack() == v.data


def test_struct_vectors_are_the_bytes_inside_the_frame_vectors() -> None:
    assert BY_NAME["out-hdr-7bit"].data in BY_NAME["i2c-register-read"].data
    assert BY_NAME["spi-transfer-head"].data in BY_NAME["spi-full-duplex"].data
    assert BY_NAME["spi-config"].data in BY_NAME["welcome-small-board"].data


def test_spi_vectors_are_valid_for_the_advertised_config() -> None:
    for name in ("spi-full-duplex", "spi-write-then-half-duplex-read"):
        ev = CLIENT_TO_SERVER[name]
        assert isinstance(ev, SpiRequest)
        for t in ev.transfers:
            assert check_spi_transfer(t, SPI_CONFIG) is None
    # The PARAM_ERR vector's message is what the check really says.
    bad = SpiTransfer(SpiTransferHead(bits_per_word=12), None, 4)
    assert check_spi_transfer(bad, SPI_CONFIG) == "bits_per_word 12 not in mask 0x80"


@pytest.mark.parametrize("name", sorted(ANNOTATIONS))
def test_annotation_adds_up_to_its_vector(name: str) -> None:
    assert name in BY_NAME, f"annotated block for unknown vector {name}"
    assert ANNOTATIONS[name] == BY_NAME[name].data


def test_every_frame_vector_is_annotated() -> None:
    missing = [v.name for v in VECTORS if v.name not in ANNOTATIONS]
    assert missing == []


def test_the_busy_vector_is_what_the_server_says() -> None:
    """The busy message of the vector is the server's own wording for that lease."""
    from bridge.server.leases import busy_message

    assert busy_message(LEASE_50) == SERVER_TO_CLIENT["error-busy"].message  # type: ignore[union-attr]


def test_the_trace_vector_is_what_the_server_says() -> None:
    """The trace event of the vector is the server's own map of that transaction."""
    from bridge.server.observe import Observed
    from bridge.server.trace import event_map

    req = I2CRequest(7, "1", tuple(chain([write(0x48, [0x00]), read(0x48, 2)])))
    obs = Observed(req, (b"\x00\x00", [b"\x0f\xa0"], []), 1764576060.25, 180e-6, True, "lab",
                   "ci", "10.0.0.5:40100")
    assert event_map(obs, 1 << 16)[0] == TRACE_EVENT


def test_editing_a_hex_digit_is_caught() -> None:
    """The comparison above is byte-exact: one changed digit changes the decode."""
    v = BY_NAME["i2c-register-read"]
    tampered = parse_vectors(SPEC_TEXT.replace("c4 01 0f", "c4 01 0e", 1))
    changed = next(t for t in tampered if t.name == v.name)
    assert changed.data != v.data
    expect = CLIENT_TO_SERVER[v.name]
    assert decode_one(Role.SERVER, changed.data, expect) != expect
