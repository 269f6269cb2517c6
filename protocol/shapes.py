"""What a RESULT must look like to answer the request it names (SPEC.md §4.5).

A client records each request's *shape* when it sends it and checks the RESULT
against it when it arrives: one status byte per request, one read entry per read
(in order), each holding exactly the bytes asked for when its status is OK and
none otherwise.  A RESULT that does not fit is a server violation, fatal like any
other (§9.3): returned as data, a drop-in's ``read_word_data`` would have turned
an empty read entry into 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from .events import Result
from .virtio import I2C_FLAGS_M_RD, I2CMsg, SpiTransfer

__all__ = ["Shape", "i2c_shape", "misfit", "spi_shape"]

#: The number of requests, then for each read entry, in order, the request's index and
#: the bytes it asked for.
Shape = tuple[int, tuple[tuple[int, int], ...]]


def i2c_shape(msgs: Sequence[I2CMsg]) -> Shape:
    """One status byte per message; one read entry per ``M_RD`` message (0 bytes too)."""
    return len(msgs), tuple((i, m.length) for i, m in enumerate(msgs)
                            if m.flags & I2C_FLAGS_M_RD)


def spi_shape(transfers: Sequence[SpiTransfer]) -> Shape:
    """One status byte per transfer; one read entry per transfer with ``rx_len`` > 0."""
    return len(transfers), tuple((i, t.rx_len) for i, t in enumerate(transfers)
                                 if t.rx_len > 0)


def misfit(result: Result, shape: Shape | None) -> str:
    """Why ``result`` cannot answer a request of ``shape``, or "" if it can (or if no
    shape was recorded: the id is not an I2C or SPI request's)."""
    if shape is None:
        return ""
    n = shape[0]
    reads = shape[1]
    status = result.status
    got = result.reads
    if len(status) != n:
        return f"{len(status)} status bytes for {n} requests"
    if len(got) != len(reads):
        return f"{len(got)} read entries for {len(reads)} reads"
    for j in range(len(reads)):  # indexes, not zip(): compiled, native ints throughout
        i, length = reads[j]
        want = length if status[i] == 0 else 0
        if len(got[j]) != want:
            return f"read entry of request {i} holds {len(got[j])} bytes, not {want}"
    return ""
