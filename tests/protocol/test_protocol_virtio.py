"""virtio-i2c / virtio-spi structures: byte layouts, address encodings, SPI checks.

Offsets and values are checked against the tables of the virtio specification
(device-types/i2c and device-types/spi) as summarised in
/work/shared/reference/virtio-bus-facts.md §1.2, §1.3, §2.2 and §2.3.
"""

from __future__ import annotations

import struct

import pytest

from protocol.virtio import (
    I2C_FLAGS_FAIL_NEXT,
    I2C_FLAGS_M_RD,
    I2C_OUT_HDR_SIZE,
    SPI_CONFIG_SIZE,
    SPI_MF_CPHA_0,
    SPI_MF_CPHA_1,
    SPI_MF_CPOL_0,
    SPI_MF_CPOL_1,
    SPI_MF_CS_HIGH,
    SPI_MF_LOOPBACK,
    SPI_MF_LSB_FIRST,
    SPI_NBITS_DUAL,
    SPI_NBITS_OCTAL,
    SPI_NBITS_QUAD,
    SPI_TRANSFER_HEAD_SIZE,
    I2CMsg,
    I2CStatus,
    SpiConfig,
    SpiMode,
    SpiResult,
    SpiTransfer,
    SpiTransferHead,
    bytes_per_word,
    chain,
    check_spi_transfer,
    decode_i2c_addr,
    encode_i2c_addr,
    read,
    split_chains,
    write,
)

# ---------------------------------------------------------------------------
# virtio-i2c: constants and the out_hdr
# ---------------------------------------------------------------------------


def test_i2c_constants_match_the_spec() -> None:
    assert I2C_FLAGS_FAIL_NEXT == 1 << 0
    assert I2C_FLAGS_M_RD == 1 << 1
    assert (int(I2CStatus.OK), int(I2CStatus.ERR)) == (0, 1)
    assert I2C_OUT_HDR_SIZE == 8


def test_out_hdr_layout_field_by_field() -> None:
    hdr = I2CMsg(0x48, I2C_FLAGS_FAIL_NEXT | I2C_FLAGS_M_RD, b"", 3).out_hdr()
    assert len(hdr) == 8
    assert hdr[0:2] == (0x48 << 1).to_bytes(2, "little")  # addr, le16
    assert hdr[2:4] == b"\x00\x00"  # padding
    assert hdr[4:8] == (0x3).to_bytes(4, "little")  # flags, le32
    assert hdr == bytes.fromhex("9000000003000000")


def test_from_out_hdr_ignores_padding_and_takes_direction_from_buf_type() -> None:
    hdr = bytes.fromhex("90 00 ff ff 02 00 00 00")  # padding is not checked on receipt
    assert I2CMsg.from_out_hdr(hdr, 4) == I2CMsg(0x48, I2C_FLAGS_M_RD, b"", 4)
    hdr = bytes.fromhex("90 00 00 00 00 00 00 00")
    assert I2CMsg.from_out_hdr(hdr, b"\x01\x02") == I2CMsg(0x48, 0, b"\x01\x02")


# ---------------------------------------------------------------------------
# Address encodings
# ---------------------------------------------------------------------------


def test_7bit_address_is_shifted_left_by_one() -> None:
    assert encode_i2c_addr(0x48) == 0x0090
    assert encode_i2c_addr(0x00) == 0x0000
    assert encode_i2c_addr(0x7F) == 0x00FE
    assert decode_i2c_addr(0x0090) == (0x48, False)


def test_10bit_address_follows_the_spec_table() -> None:
    # 0x2A5 = 10 1010 0101: A9 A8 = 1 0; A7..A0 = 0xA5.
    # Low byte (bits 7..0): 1 1 1 1 0 A9 A8 0 = 1111 0100 = 0xF4; high byte = A7..A0.
    field = encode_i2c_addr(0x2A5, ten_bit=True)
    assert field & 0xFF == 0b1111_0100 == 0xF4
    assert field >> 8 == 0xA5
    assert field.to_bytes(2, "little") == b"\xf4\xa5"
    assert decode_i2c_addr(field) == (0x2A5, True)


@pytest.mark.parametrize(
    ("addr", "field"),
    [(0x000, 0x00F0), (0x0FF, 0xFFF0), (0x100, 0x00F2), (0x200, 0x00F4), (0x3FF, 0xFFF6)],
)
def test_10bit_encoding_corners(addr: int, field: int) -> None:
    assert encode_i2c_addr(addr, ten_bit=True) == field


@pytest.mark.parametrize("bad", [-1, 0x80, 0x100])
def test_7bit_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="7-bit"):
        encode_i2c_addr(bad)


@pytest.mark.parametrize("bad", [-1, 0x400])
def test_10bit_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="10-bit"):
        encode_i2c_addr(bad, ten_bit=True)


@pytest.mark.parametrize("field", [0x0001, 0x0091, 0xA5F5, 0xFFFF])
def test_decode_rejects_bit_0_set(field: int) -> None:
    with pytest.raises(ValueError, match="bit 0"):
        decode_i2c_addr(field)


@pytest.mark.parametrize("field", [0x0190, 0x8000 | (0x48 << 1), 0xFF02])
def test_decode_rejects_a_7bit_field_with_a_high_byte(field: int) -> None:
    with pytest.raises(ValueError, match="high byte"):
        decode_i2c_addr(field)


def test_every_7bit_address_round_trips_except_the_10bit_prefix() -> None:
    for addr in range(0x80):
        field = encode_i2c_addr(addr)
        assert field >> 8 == 0
        assert field & 1 == 0
        if 0x78 <= addr <= 0x7B:
            continue  # see test_10bit_prefix_collision
        assert decode_i2c_addr(field) == (addr, False)


def test_every_10bit_address_round_trips() -> None:
    fields = set()
    for addr in range(0x400):
        field = encode_i2c_addr(addr, ten_bit=True)
        assert field & 0xF9 == 0xF0  # low byte 11110xx0
        assert decode_i2c_addr(field) == (addr, True)
        fields.add(field)
    assert len(fields) == 0x400  # the encoding is injective


def test_10bit_prefix_collision() -> None:
    """7-bit 0x78..0x7B encode like 10-bit 0x000/0x100/0x200/0x300; decode says 10-bit.

    0x78..0x7B are the I2C 10-bit addressing prefix (1111 0xx), reserved for 7-bit
    devices, so busbridge decodes these fields as 10-bit addresses (SPEC.md §5.2).
    """
    for seven, ten in zip(range(0x78, 0x7C), (0x000, 0x100, 0x200, 0x300), strict=True):
        field = encode_i2c_addr(seven)
        assert field == encode_i2c_addr(ten, ten_bit=True)
        assert decode_i2c_addr(field) == (ten, True)
    # The address byte on the wire is the same either way: 0x78 << 1 == 0xF0.
    assert encode_i2c_addr(0x78) & 0xFF == 0xF0
    # Only these four: 10-bit addresses with a non-zero low byte cannot collide.
    colliding = [a for a in range(0x80) if decode_i2c_addr(encode_i2c_addr(a))[1]]
    assert colliding == [0x78, 0x79, 0x7A, 0x7B]


def test_msg_out_hdr_round_trips_for_both_address_modes() -> None:
    for m in (write(0x50, b"\x00\x10"), read(0x2A5, 4, ten_bit=True), write(0x03)):
        buf: bytes | int = m.length if m.is_read else m.data
        assert I2CMsg.from_out_hdr(m.out_hdr(), buf) == m


# ---------------------------------------------------------------------------
# Message helpers, chain() and split_chains()
# ---------------------------------------------------------------------------


def test_read_write_helpers() -> None:
    w = write(0x48, [1, 2, 3])
    assert (w.flags, w.data, w.length, w.is_read, w.size) == (0, b"\x01\x02\x03", 0, False, 3)
    r = read(0x48, 2)
    assert (r.flags, r.data, r.length, r.is_read, r.size) == (I2C_FLAGS_M_RD, b"", 2, True, 2)
    probe = write(0x3C)
    assert probe.size == 0
    assert not probe.is_read
    assert r.describe() == "r2@0x48"
    assert read(0x2A5, 1, ten_bit=True).describe() == "r1@0x2a5(10-bit)"


def test_chain_sets_fail_next_on_all_but_the_last() -> None:
    msgs = chain([write(0x48, [0x0F]), read(0x48, 2), read(0x48, 1)])
    assert [m.fail_next for m in msgs] == [True, True, False]
    assert [m.is_read for m in msgs] == [False, True, True]


def test_chain_clears_a_stale_fail_next_on_the_last() -> None:
    stale = I2CMsg(0x48, I2C_FLAGS_FAIL_NEXT | I2C_FLAGS_M_RD, b"", 1)
    out = chain([write(0x48, [1]), stale])
    assert out[-1].flags == I2C_FLAGS_M_RD
    assert chain([stale]) == [read(0x48, 1)]
    assert chain([]) == []


def test_chain_keeps_the_data() -> None:
    a, b = chain([write(0x50, b"\x00\x10"), read(0x50, 8)])
    assert a.data == b"\x00\x10"
    assert b.length == 8


def test_split_chains() -> None:
    msgs = [
        *chain([write(0x48, [0x0F]), read(0x48, 2)]),  # chain at 0
        write(0x49, [1]),  # chain of one at 2
        *chain([read(0x50, 1), read(0x50, 1), read(0x50, 1)]),  # chain at 3
    ]
    got = [(start, list(c)) for start, c in split_chains(msgs)]
    assert [start for start, _ in got] == [0, 2, 3]
    assert [len(c) for _, c in got] == [2, 1, 3]
    assert got[1][1] == [msgs[2]]
    assert [m for _, c in got for m in c] == msgs


def test_split_chains_yields_an_unterminated_tail() -> None:
    msgs = [write(0x48, [1]), I2CMsg(0x48, I2C_FLAGS_FAIL_NEXT, b"\x02")]
    assert [(s, list(c)) for s, c in split_chains(msgs)] == [(0, [msgs[0]]), (1, [msgs[1]])]
    assert list(split_chains([])) == []


# ---------------------------------------------------------------------------
# virtio-spi: transfer_head and config layouts
# ---------------------------------------------------------------------------

HEAD_FIELDS = [
    # (name, offset, size) per virtio-bus-facts.md §2.3
    ("chip_select_id", 0, 1),
    ("bits_per_word", 1, 1),
    ("cs_change", 2, 1),
    ("tx_nbits", 3, 1),
    ("rx_nbits", 4, 1),
    ("mode", 8, 4),
    ("freq", 12, 4),
    ("word_delay_ns", 16, 4),
    ("cs_setup_ns", 20, 4),
    ("cs_delay_hold_ns", 24, 4),
    ("cs_change_delay_inactive_ns", 28, 4),
]

CONFIG_FIELDS = [
    # (name, offset, size) per virtio-bus-facts.md §2.2
    ("cs_max_number", 0, 1),
    ("cs_change_supported", 1, 1),
    ("tx_nbits_supported", 2, 1),
    ("rx_nbits_supported", 3, 1),
    ("bits_per_word_mask", 4, 4),
    ("mode_func_supported", 8, 4),
    ("max_freq_hz", 12, 4),
    ("max_word_delay_ns", 16, 4),
    ("max_cs_setup_ns", 20, 4),
    ("max_cs_hold_ns", 24, 4),
    ("max_cs_inactive_ns", 28, 4),
]


def _distinct(size: int, i: int) -> int:
    """A value that fills every byte of a field, different for each field."""
    return int.from_bytes(bytes((0x11 * (i + 1) + k) & 0xFF for k in range(size)), "little")


def test_sizes() -> None:
    assert SPI_TRANSFER_HEAD_SIZE == 32
    assert SPI_CONFIG_SIZE == 32
    assert len(SpiTransferHead().pack()) == 32
    assert len(SpiConfig().pack()) == 32


@pytest.mark.parametrize(("name", "offset", "size"), HEAD_FIELDS)
def test_transfer_head_field_offsets(name: str, offset: int, size: int) -> None:
    value = _distinct(size, offset)
    fields: dict[str, int] = {"bits_per_word": 0, name: value}
    raw = SpiTransferHead(**fields).pack()
    expected = bytearray(32)
    expected[offset : offset + size] = value.to_bytes(size, "little")
    assert raw == bytes(expected)
    assert getattr(SpiTransferHead.unpack(raw), name) == value


def test_transfer_head_all_fields_round_trip() -> None:
    values = {name: _distinct(size, i) for i, (name, _, size) in enumerate(HEAD_FIELDS)}
    head = SpiTransferHead(**values)
    raw = head.pack()
    assert raw[5:8] == b"\x00\x00\x00"  # reserved, written as zero
    assert SpiTransferHead.unpack(raw) == head


def test_transfer_head_ignores_reserved_bytes_on_unpack() -> None:
    raw = bytearray(SpiTransferHead(bits_per_word=8, freq=1000).pack())
    raw[5:8] = b"\xaa\xbb\xcc"
    assert SpiTransferHead.unpack(bytes(raw)) == SpiTransferHead(bits_per_word=8, freq=1000)


@pytest.mark.parametrize(("name", "offset", "size"), CONFIG_FIELDS)
def test_config_field_offsets(name: str, offset: int, size: int) -> None:
    zero = {n: 0 for n, _, _ in CONFIG_FIELDS}
    value = _distinct(size, offset)
    raw = SpiConfig(**{**zero, name: value}).pack()
    expected = bytearray(32)
    expected[offset : offset + size] = value.to_bytes(size, "little")
    assert raw == bytes(expected)
    assert getattr(SpiConfig.unpack(raw), name) == value


def test_config_round_trip_and_layout_matches_the_c_struct() -> None:
    cfg = SpiConfig(2, 1, SPI_NBITS_DUAL, SPI_NBITS_QUAD, 0x80, 0x7F, 10**7, 1, 2, 3, 4)
    raw = cfg.pack()
    assert SpiConfig.unpack(raw) == cfg
    # struct virtio_spi_config: 4 x u8 then 7 x le32, no padding.
    assert raw == struct.pack("<4B7I", 2, 1, 1, 2, 0x80, 0x7F, 10**7, 1, 2, 3, 4)


def test_spi_constants_match_the_spec() -> None:
    assert (SpiResult.TRANS_OK, SpiResult.PARAM_ERR, SpiResult.TRANS_ERR) == (0, 1, 2)
    assert [int(m) for m in SpiMode] == [1, 2, 4, 8, 16]  # LOOP is bit 4, not Linux's 0x20
    assert (SPI_MF_CPHA_0, SPI_MF_CPHA_1, SPI_MF_CPOL_0, SPI_MF_CPOL_1) == (1, 2, 4, 8)
    assert (SPI_MF_CS_HIGH, SPI_MF_LSB_FIRST, SPI_MF_LOOPBACK) == (16, 32, 64)
    assert (SPI_NBITS_DUAL, SPI_NBITS_QUAD, SPI_NBITS_OCTAL) == (1, 2, 4)


def test_bytes_per_word() -> None:
    assert [bytes_per_word(b) for b in (1, 8, 9, 16, 17, 32)] == [1, 1, 2, 2, 4, 4]


# ---------------------------------------------------------------------------
# check_spi_transfer: one case per PARAM_ERR condition
# ---------------------------------------------------------------------------

FULL = SpiConfig(
    cs_max_number=2,
    cs_change_supported=1,
    tx_nbits_supported=SPI_NBITS_DUAL | SPI_NBITS_QUAD | SPI_NBITS_OCTAL,
    rx_nbits_supported=SPI_NBITS_DUAL | SPI_NBITS_QUAD | SPI_NBITS_OCTAL,
    bits_per_word_mask=0,
    mode_func_supported=0x7F,
    max_freq_hz=10_000_000,
    max_word_delay_ns=1000,
    max_cs_setup_ns=1000,
    max_cs_hold_ns=1000,
    max_cs_inactive_ns=1000,
)
MINIMAL = SpiConfig(
    cs_max_number=1,
    cs_change_supported=0,
    bits_per_word_mask=1 << 7,  # 8-bit words only
    mode_func_supported=SPI_MF_CPHA_0 | SPI_MF_CPOL_0,  # mode 0 only
    max_freq_hz=1_000_000,
)


def xfer(tx: bytes | None = b"\x00", rx_len: int = 0, **head: int) -> SpiTransfer:
    head.setdefault("bits_per_word", 8)
    return SpiTransfer(SpiTransferHead(**head), tx, rx_len)


VALID = [
    ("half-duplex write", xfer(b"\x01\x02"), MINIMAL),
    ("half-duplex read", xfer(None, 4), MINIMAL),
    ("full duplex", xfer(b"\x9f\x00", 2), MINIMAL),
    ("freq 0 is not checked", xfer(freq=0), MINIMAL),
    ("freq at the maximum", xfer(freq=1_000_000), MINIMAL),
    ("nbits 0 and 1 are single", xfer(tx_nbits=1, rx_nbits=0), MINIMAL),
    ("max_freq_hz 0 means no limit", xfer(freq=10**9), SpiConfig(max_freq_hz=0)),
    ("mask 0 allows any word size", xfer(b"\x00" * 4, bits_per_word=32), SpiConfig()),
    ("12-bit words take 2 bytes", xfer(b"\x00\x00", bits_per_word=12), FULL),
    ("everything supported", xfer(
        b"\x00\x00", 2, chip_select_id=1, cs_change=1, tx_nbits=8, rx_nbits=4,
        mode=0x1F, freq=10_000_000, word_delay_ns=1000, cs_setup_ns=1000,
        cs_delay_hold_ns=1000, cs_change_delay_inactive_ns=1000), FULL),
]


@pytest.mark.parametrize(("why", "t", "cfg"), VALID, ids=[v[0] for v in VALID])
def test_valid_transfers_pass(why: str, t: SpiTransfer, cfg: SpiConfig) -> None:
    assert check_spi_transfer(t, cfg) is None


INVALID = [
    # (condition, transfer, config, words the reason must contain)
    ("cs out of range", xfer(chip_select_id=1), MINIMAL, "chip select 1"),
    ("cs == cs_max_number", xfer(chip_select_id=2), FULL, "cs_max_number 2"),
    ("full-duplex length mismatch", xfer(b"\x00\x00", 3), FULL, "full-duplex"),
    ("empty tx with rx is a mismatch", xfer(b"", 2), FULL, "full-duplex"),
    ("zero length, no buffers", xfer(None, 0), FULL, "zero-length"),
    ("zero length, empty tx", xfer(b"", 0), FULL, "zero-length"),
    ("bits_per_word 0", xfer(bits_per_word=0), FULL, "outside 1..32"),
    ("bits_per_word 33", xfer(b"\x00" * 8, bits_per_word=33), FULL, "outside 1..32"),
    ("bits_per_word not in mask", xfer(b"\x00\x00", bits_per_word=16), MINIMAL, "not in mask"),
    ("16-bit words, odd length", xfer(b"\x00" * 3, bits_per_word=16), FULL, "whole number"),
    ("32-bit words, 6 bytes", xfer(None, 6, bits_per_word=32), FULL, "whole number"),
    ("cs_change 2", xfer(cs_change=2), FULL, "cs_change 2"),
    ("cs_change unsupported", xfer(cs_change=1), MINIMAL, "cs_change requested"),
    ("tx_nbits 3", xfer(tx_nbits=3), FULL, "tx_nbits 3"),
    ("rx_nbits 16", xfer(None, 1, rx_nbits=16), FULL, "rx_nbits 16"),
    ("dual unsupported", xfer(tx_nbits=2), MINIMAL, "tx_nbits 2 not supported"),
    ("quad unsupported", xfer(None, 1, rx_nbits=4), MINIMAL, "rx_nbits 4 not supported"),
    ("reserved mode bit", xfer(mode=1 << 5), FULL, "reserved"),
    ("CPHA=1 unsupported", xfer(mode=SpiMode.CPHA), MINIMAL, "CPHA=1"),
    ("CPOL=1 unsupported", xfer(mode=SpiMode.CPOL), MINIMAL, "CPOL=1"),
    ("CPHA=0 unsupported", xfer(), SpiConfig(mode_func_supported=SPI_MF_CPHA_1 | SPI_MF_CPOL_0),
     "CPHA=0"),
    ("CPOL=0 unsupported", xfer(), SpiConfig(mode_func_supported=SPI_MF_CPHA_0 | SPI_MF_CPOL_1),
     "CPOL=0"),
    ("CS_HIGH unsupported", xfer(mode=SpiMode.CS_HIGH), MINIMAL, "CS_HIGH"),
    ("LSB_FIRST unsupported", xfer(mode=SpiMode.LSB_FIRST), MINIMAL, "LSB_FIRST"),
    ("LOOP unsupported", xfer(mode=SpiMode.LOOP), MINIMAL, "LOOP"),
    ("freq above max", xfer(freq=1_000_001), MINIMAL, "above max"),
    ("word delay unsupported", xfer(word_delay_ns=1), MINIMAL, "word_delay_ns 1 requested"),
    ("cs setup unsupported", xfer(cs_setup_ns=5), MINIMAL, "cs_setup_ns"),
    ("cs hold unsupported", xfer(cs_delay_hold_ns=5), MINIMAL, "cs_delay_hold_ns"),
    ("cs inactive unsupported", xfer(cs_change_delay_inactive_ns=5), MINIMAL,
     "cs_change_delay_inactive_ns"),
    ("word delay above max", xfer(word_delay_ns=1001), FULL, "above max 1000"),
    ("cs inactive above max", xfer(cs_change_delay_inactive_ns=1001), FULL, "above max 1000"),
]


@pytest.mark.parametrize(("why", "t", "cfg", "words"), INVALID, ids=[v[0] for v in INVALID])
def test_each_param_err_condition_gives_a_reason(
    why: str, t: SpiTransfer, cfg: SpiConfig, words: str
) -> None:
    reason = check_spi_transfer(t, cfg)
    assert reason is not None, why
    assert words in reason


def test_spi_transfer_length() -> None:
    assert xfer(b"\x01\x02\x03").length == 3
    assert xfer(None, 5).length == 5
    assert xfer(b"\x01\x02", 2).length == 2
