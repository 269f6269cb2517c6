"""The i2c-tools argument parsers and output formats, without a server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.cli.i2ctools import (
    DETECT_HEADER,
    I2CArgError,
    detect_mode,
    detect_range,
    fill_data,
    format_block,
    format_detect_grid,
    format_functionality,
    format_get,
    format_hex,
    format_msgs,
    format_transfer,
    functionality_names,
    parse_chip_address,
    parse_data_byte,
    parse_descriptor,
    parse_get_mode,
    parse_hex_bytes,
    parse_number,
    parse_set,
    parse_transfer,
    probe_kind,
)
from protocol.handshake import I2C_FUNC_10BIT_ADDR, I2C_FUNC_I2C, I2C_FUNC_SMBUS_QUICK
from protocol.virtio import I2CMsg, read, write

# ---------------------------------------------------------------------------
# Numbers and addresses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("0x48", 0x48), ("0X4f", 0x4F), ("072", 0o72), ("72", 72), ("0", 0), (" 10 ", 10)],
)
def test_numbers_use_c_syntax(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "0x", "abc", "-1", "08", "1.5", "0x1g", "+3"])
def test_bad_numbers_are_refused(text: str) -> None:
    with pytest.raises(I2CArgError, match="not a number"):
        parse_number(text)


def test_number_maximum() -> None:
    assert parse_number("0xff", maximum=0xFF) == 0xFF
    with pytest.raises(I2CArgError, match="out of range"):
        parse_number("0x100", "data byte", 0xFF)


def test_chip_address_range_follows_i2c_tools() -> None:
    assert parse_chip_address("0x03") == 0x03
    assert parse_chip_address("0x77") == 0x77
    assert parse_chip_address("48") == 48  # decimal, as strtol(.., 0) reads it
    for bad in ("0x02", "0x78", "0x7f"):
        with pytest.raises(I2CArgError, match=r"out of range \(0x03-0x77; -a allows"):
            parse_chip_address(bad)
    assert parse_chip_address("0x00", all_addrs=True) == 0
    assert parse_chip_address("0x7f", all_addrs=True) == 0x7F
    with pytest.raises(I2CArgError, match=r"'0x80' is not a 7-bit address .* it is 7-bit 0x40"):
        parse_chip_address("0x80", all_addrs=True)


# ---------------------------------------------------------------------------
# i2ctransfer descriptors and data
# ---------------------------------------------------------------------------


def test_descriptor_basics() -> None:
    assert parse_descriptor("w1@0x48") == (False, 1, 0x48, False)
    assert parse_descriptor("r16@0x50") == (True, 16, 0x50, False)
    assert parse_descriptor("r0x10@80") == (True, 16, 80, False)
    assert parse_descriptor("w0@0x50") == (False, 0, 0x50, False)


def test_descriptor_address_carries_over() -> None:
    assert parse_descriptor("r2", last=(0x48, False)) == (True, 2, 0x48, False)
    assert parse_descriptor("r2", last=(0x2A5, True)) == (True, 2, 0x2A5, True)
    with pytest.raises(I2CArgError, match="no address given"):
        parse_descriptor("r2")


def test_ten_bit_addresses() -> None:
    assert parse_descriptor("r2@t0x2a5") == (True, 2, 0x2A5, True)
    assert parse_descriptor("w1@t0x050") == (False, 1, 0x50, True)
    # Only the explicit form is 10-bit: 0x90 is much more likely an 8-bit slip for 0x48.
    with pytest.raises(I2CArgError, match=r"it is 7-bit 0x48; a 10-bit address is written "
                                          r"r2@t0x090"):
        parse_descriptor("r2@0x90")
    with pytest.raises(I2CArgError, match=r"a 10-bit address is written r2@t0x2a5$"):
        parse_descriptor("r2@0x2a5")
    assert parse_descriptor("w1@t0x3ff") == (False, 1, 0x3FF, True)
    with pytest.raises(I2CArgError, match="out of range"):
        parse_descriptor("r1@0x400")
    with pytest.raises(I2CArgError, match="out of range"):
        parse_descriptor("r1@t0x400")


@pytest.mark.parametrize(
    ("desc", "match"),
    [
        ("x1@0x50", "invalid message descriptor"),
        ("1@0x50", "invalid message descriptor"),
        ("r@0x50", "missing length"),
        ("r?@0x50", "I2C_M_RECV_LEN"),
        ("pr1@0x50", "no protocol mangling"),
        ("ir1@0x50", "no protocol mangling"),
        ("zr1@0x50", "unknown message flag"),
        ("r1@", "missing address"),
        ("r1@0x02", "out of range"),
        ("r1@0x78", "out of range"),
        ("r0x10000@0x50", "out of range"),
        ("rx@0x50", "not a number"),
    ],
)
def test_bad_descriptors(desc: str, match: str) -> None:
    with pytest.raises(I2CArgError, match=match):
        parse_descriptor(desc)


def test_reserved_addresses_need_all_addrs() -> None:
    assert parse_descriptor("r1@0x78", all_addrs=True) == (True, 1, 0x78, False)
    assert parse_descriptor("r1@0x00", all_addrs=True) == (True, 1, 0x00, False)


def test_data_bytes_and_suffixes() -> None:
    assert parse_data_byte("0x10") == (0x10, "")
    assert parse_data_byte("0xff=") == (0xFF, "=")
    assert parse_data_byte("7+") == (7, "+")
    assert parse_data_byte("0-") == (0, "-")
    assert parse_data_byte("0x12p") == (0x12, "p")
    for bad in ("0x100", "0x10q", "", "=", "abc"):
        with pytest.raises(I2CArgError, match="invalid data byte"):
            parse_data_byte(bad)


def test_fill_suffixes_wrap_at_8_bits() -> None:
    assert fill_data(0xAB, "=", 3) == b"\xab\xab\xab"
    assert fill_data(0xFE, "+", 4) == b"\xfe\xff\x00\x01"
    assert fill_data(0x01, "-", 3) == b"\x01\x00\xff"
    assert fill_data(0x42, "", 1) == b"\x42"


def test_pseudo_random_matches_i2ctransfer() -> None:
    # i2ctransfer: v = (v ^ 27) + 13, then rotate left by one (8 bits).
    assert fill_data(0x00, "p", 4) == bytes([0x00, 0x50, 0xB0, 0x71])


def test_transfer_messages() -> None:
    msgs = parse_transfer(["w1@0x48", "0x0f", "r2"])
    assert msgs == [write(0x48, [0x0F]), read(0x48, 2)]


def test_transfer_suffix_fills_the_rest_of_the_message() -> None:
    msgs = parse_transfer(["w17@0x50", "0x42", "0xff-", "r1"])
    assert msgs[0].data == bytes([0x42, *range(0xFF, 0xEF, -1)])
    assert msgs[1] == read(0x50, 1)
    # A suffixed byte after explicit ones fills only what is left.
    (m,) = parse_transfer(["w5@0x50", "0x00", "0x10", "0x20+"])
    assert m.data == b"\x00\x10\x20\x21\x22"


def test_transfer_ten_bit_carries_over() -> None:
    msgs = parse_transfer(["w1@t0x2a5", "0x00", "r1"])
    assert msgs == [write(0x2A5, [0], ten_bit=True), read(0x2A5, 1, ten_bit=True)]


def test_transfer_zero_length_write_is_a_message() -> None:
    assert parse_transfer(["w0@0x50"]) == [write(0x50)]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([], "no message given"),
        (["w2@0x50", "0x00"], "incomplete message w2@0x50: 1 of 2"),
        (["w1@0x50", "0x00", "0x01"], "invalid message descriptor '0x01'"),
        (["w1@0x50", "r1"], "invalid data byte 'r1'"),
        (["w1@0x50", "0x100"], "invalid data byte"),
    ],
)
def test_bad_transfers(args: list[str], match: str) -> None:
    with pytest.raises(I2CArgError, match=match):
        parse_transfer(args)


def test_output_formats() -> None:
    assert format_block(b"\x01\x17") == "0x01 0x17"
    assert format_block(b"") == ""
    assert format_hex(b"\xff\xef\x40\x16") == "ff ef 40 16"
    msgs = [write(0x48, [0x0F]), read(0x48, 2), read(0x2A5, 1, ten_bit=True)]
    assert format_msgs(msgs) == [
        "msg 0: addr 0x48, write, len 1, buf 0x0f",
        "msg 1: addr 0x48, read, len 2",
        "msg 2: addr 0x2a5 (10-bit), read, len 1",
    ]
    assert format_msgs(msgs, [b"\x01\x17", b"\xa5"])[1:] == [
        "msg 1: addr 0x48, read, len 2, buf 0x01 0x17",
        "msg 2: addr 0x2a5 (10-bit), read, len 1, buf 0xa5",
    ]


def test_transfer_output_prints_reads_or_every_message() -> None:
    msgs = [write(0x48, [0x0F]), read(0x48, 2), read(0x48, 0)]
    reads = [b"\x01\x17", b""]
    assert format_transfer(msgs, reads, verbose=False) == ["0x01 0x17"]
    assert format_transfer(msgs, reads, verbose=True) == [
        "msg 0: addr 0x48, write, len 1, buf 0x0f",
        "msg 1: addr 0x48, read, len 2, buf 0x01 0x17",
        "msg 2: addr 0x48, read, len 0",
    ]


# ---------------------------------------------------------------------------
# i2cget / i2cset
# ---------------------------------------------------------------------------


def test_get_mode_says_how_many_bytes_to_read() -> None:
    assert parse_get_mode(None, None) == ("b", 1)
    assert parse_get_mode("w", None) == ("w", 2)
    assert parse_get_mode("c", None) == ("c", 1)
    assert parse_get_mode("i", None) == ("i", 32)
    assert parse_get_mode("i", "4") == ("i", 4)
    for mode, length, match in (("b", "4", "only for mode 'i'"), ("i", "33", "out of range"),
                                ("s", None, "I2C_M_RECV_LEN"), ("wp", None, "PEC"),
                                ("x", None, "invalid mode")):
        with pytest.raises(I2CArgError, match=match):
            parse_get_mode(mode, length)


def test_get_output_is_i2cget_s() -> None:
    assert format_get(None, b"\x17") == "0x17"
    assert format_get("b", b"\x01") == "0x01"
    assert format_get("w", b"\x01\x17") == "0x1701"  # SMBus order: little-endian
    assert format_get("i", b"\x01\x17\x00") == "0x01 0x17 0x00"


def test_set_writes_one_message_per_mode() -> None:
    b = parse_set(0x48, 0x02, ["0x12"], None, False)
    assert (b.mode, b.value, b.write_msg(b.value)) == ("b", 0x12, write(0x48, [0x02, 0x12]))
    w = parse_set(0x48, 0x02, ["0x1234", "w"], None, False)
    assert w.write_msg(w.value) == write(0x48, [0x02, 0x34, 0x12])
    assert w.read_msgs() == [write(0x48, [0x02]), read(0x48, 2)]
    c = parse_set(0x48, 0x0F, [], None, True)
    assert c.write_msg(c.value) == write(0x48, [0x0F])  # REG itself is the byte sent
    assert c.read_msgs() == [read(0x48, 1)]
    i = parse_set(0x50, 0x00, ["1", "2", "3", "i"], None, False)
    assert i.write_msg(i.value) == write(0x50, [0x00, 1, 2, 3])
    assert i.describe() == "data address 0x00, data 0x01 0x02 0x03, mode I2C block write."
    assert c.describe() == "data 0x0f, mode short write."


def test_set_mask_keeps_the_other_bits() -> None:
    m = parse_set(0x48, 0x02, ["0xabcd", "w"], "0x00ff", True)
    assert m.masked(0x1234) == 0x12CD
    assert m.describe() == "data address 0x02, data 0xabcd (masked), mode word data."
    assert m.mask_line(0x1234, 0x12CD) == \
        "Old value 0x1234, write mask 0x00ff, will write 0x12cd"
    assert m.readback_line(0x12CD, 0x12CD) == "Value 0x12cd written, readback matched"
    assert m.readback_line(0x12CD, 0x1234) == \
        "Warning - data mismatch - wrote 0x12cd, read back 0x1234"


@pytest.mark.parametrize(("rest", "mask", "readback", "match"), [
    (["0x12"], "0", False, "mask 0"),
    (["0x12"], "0x100", False, "out of range"),
    (["1", "2", "i"], "0xff", False, "block writes"),
    (["1", "2", "i"], None, True, "block writes"),
])
def test_bad_set_arguments(rest: list[str], mask: str | None, readback: bool,
                           match: str) -> None:
    with pytest.raises(I2CArgError, match=match):
        parse_set(0x48, 0x02, rest, mask, readback)


# ---------------------------------------------------------------------------
# i2cdetect
# ---------------------------------------------------------------------------


def test_detect_range() -> None:
    assert detect_range(None, None) == (0x08, 0x77)
    assert detect_range(None, None, all_addrs=True) == (0x00, 0x7F)
    assert detect_range("0x40", "0x4f") == (0x40, 0x4F)
    assert detect_range("0x40", None) == (0x40, 0x77)
    with pytest.raises(I2CArgError, match="FIRST"):
        detect_range("0x03", None)
    with pytest.raises(I2CArgError, match="LAST"):
        detect_range("0x40", "0x30")
    with pytest.raises(I2CArgError, match="LAST"):
        detect_range("0x40", "0x78")


def test_detect_mode_is_one_kind_or_each_its_own() -> None:
    assert detect_mode(False, False) == "auto"
    assert detect_mode(True, False) == "quick"
    assert detect_mode(False, True) == "read"
    with pytest.raises(I2CArgError, match="different modes"):
        detect_mode(True, True)


def test_probe_kind_is_i2cdetect_default() -> None:
    assert probe_kind(0x48) == "quick"
    assert probe_kind(0x30) == probe_kind(0x37) == "read"
    assert probe_kind(0x50) == probe_kind(0x5F) == "read"
    assert probe_kind(0x38) == probe_kind(0x60) == "quick"
    assert probe_kind(0x50, "quick") == "quick"
    assert probe_kind(0x48, "read") == "read"


def test_detect_grid_is_byte_exact() -> None:
    grid = format_detect_grid(range(0x08, 0x78), {0x48, 0x50}).split("\n")
    assert grid[0] == DETECT_HEADER
    assert grid[0] == "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f"
    assert grid[1] == "00: " + "   " * 8 + "-- " * 8
    assert grid[5] == "40: " + "-- " * 8 + "48 " + "-- " * 7
    assert grid[6] == "50: 50 " + "-- " * 15
    assert grid[8] == "70: " + "-- " * 8 + "   " * 8
    assert len(grid) == 9


def test_detect_grid_blanks_unprobed() -> None:
    grid = format_detect_grid({0x18, 0x19}, {0x18}).split("\n")
    assert grid[2] == "10: " + "   " * 8 + "18 -- " + "   " * 6
    assert all(line[4:].strip() == "" for i, line in enumerate(grid[1:]) if i != 1)


# ---------------------------------------------------------------------------
# Functionality and hex
# ---------------------------------------------------------------------------


def test_functionality_names() -> None:
    names = functionality_names(I2C_FUNC_I2C | I2C_FUNC_10BIT_ADDR | I2C_FUNC_SMBUS_QUICK)
    assert names == ["I2C", "10BIT_ADDR", "SMBUS_QUICK"]
    assert "SMBUS_EMUL" not in functionality_names(0x0EFF000B)
    assert functionality_names(0x40000000) == ["0x40000000"]
    assert functionality_names(0) == []


def test_functionality_table_like_i2cdetect_f() -> None:
    rows = format_functionality(I2C_FUNC_I2C)
    assert rows[0] == "I2C                              yes"
    assert rows[1] == "SMBus Quick Command              no"
    assert len(rows) == 20


@pytest.mark.parametrize(
    ("tokens", "data"),
    [
        (["9f000000"], b"\x9f\x00\x00\x00"),
        (["9f", "00", "00", "00"], b"\x9f\x00\x00\x00"),
        (["0x9f", "0x00"], b"\x9f\x00"),
        (["0", "f", "0xA"], b"\x00\x0f\x0a"),
        (["9f:00,01", "0X02"], b"\x9f\x00\x01\x02"),
        (["0xdeadbeef"], b"\xde\xad\xbe\xef"),
        ([], b""),
    ],
)
def test_hex_bytes(tokens: list[str], data: bytes) -> None:
    assert parse_hex_bytes(tokens) == data


@pytest.mark.parametrize("token", ["9f0", "xyz", "0x", "9g"])
def test_bad_hex_bytes(token: str) -> None:
    with pytest.raises(I2CArgError):
        parse_hex_bytes([token])


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_msg = st.one_of(
    st.builds(lambda a, n: read(a, n), st.integers(0x03, 0x77), st.integers(0, 64)),
    st.builds(lambda a, d: write(a, d), st.integers(0x03, 0x77), st.binary(max_size=16)),
    st.builds(lambda a, n: read(a, n, ten_bit=True), st.integers(0x80, 0x3FF),
              st.integers(0, 8)),
)


def _as_args(msgs: list[I2CMsg], fmt: str) -> list[str]:
    """Messages as i2ctransfer arguments, data in ``fmt``: hex, decimal or C octal."""
    args: list[str] = []
    for m in msgs:
        args.append(f"{'r' if m.is_read else 'w'}{m.size}@{'t' if m.ten_bit else ''}"
                    f"{m.addr:#x}")
        args += [f"0{b:o}" if fmt == "o" else format(b, fmt) for b in m.data]
    return args


@given(st.lists(_msg, min_size=1, max_size=6), st.sampled_from(["#04x", "d", "o"]))
def test_transfer_args_round_trip(msgs: list[I2CMsg], fmt: str) -> None:
    assert parse_transfer(_as_args(msgs, fmt)) == msgs


@given(st.integers(0, 0xFF), st.integers(1, 600))
def test_fill_sequences(value: int, n: int) -> None:
    assert fill_data(value, "=", n) == bytes([value]) * n
    assert list(fill_data(value, "+", n)) == [(value + i) & 0xFF for i in range(n)]
    assert list(fill_data(value, "-", n)) == [(value - i) & 0xFF for i in range(n)]
    assert len(fill_data(value, "p", n)) == n
