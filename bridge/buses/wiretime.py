"""How long a transaction keeps a bus busy on the wire, from its lengths and the bus clock.

One model, used by the simulator (to sleep that long when ``timing`` is on) and
by the server (to budget bus time, to skip a transaction that cannot finish
before its deadline, and to keep only cheap frames on the event loop).

I2C: every message costs a START (or repeated START) and 9 clocks per byte
(8 data bits and the ACK bit), its address bytes included (2 for a 10-bit
address); a chain ends with one STOP.  SPI: ``bits_per_word`` clocks per word at
the transfer's ``freq`` (else the controller's maximum), plus the head's
delays.  Both are the time the bits need at that clock: a real adapter adds
gaps and clock stretching, so it is a lower bound on a real bus's time.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.virtio import I2CMsg, SpiTransfer, bytes_per_word

#: Clocks of one I2C message besides its bytes: the START or repeated START.
I2C_START_CLOCKS = 1
#: Clocks per I2C byte: 8 data bits and the ACK/NACK bit.
I2C_BYTE_CLOCKS = 9


def i2c_clocks(msgs: Sequence[I2CMsg]) -> int:
    """Clock cycles of ``msgs`` as one combined transaction (START ... STOP)."""
    clocks = 1  # STOP
    for m in msgs:
        clocks += I2C_START_CLOCKS + I2C_BYTE_CLOCKS * (
            (2 if m.ten_bit else 1) + len(m.data) + m.length)
    return clocks


def i2c_wire_time(msgs: Sequence[I2CMsg], frequency_hz: int) -> float:
    """Seconds ``msgs`` need on the wire as one transaction at ``frequency_hz``."""
    return i2c_clocks(msgs) / frequency_hz


def spi_wire_time(transfers: Sequence[SpiTransfer], default_hz: int) -> float:
    """Seconds one SPI message needs: its words at each transfer's clock, and its delays.

    ``default_hz`` is the clock of a transfer whose ``freq`` is 0 (the
    controller's maximum).
    """
    ns = 0.0
    for t in transfers:
        h = t.head
        words = t.length // bytes_per_word(h.bits_per_word)
        ns += words * h.bits_per_word * 1e9 / (h.freq or default_hz)
        ns += max(words - 1, 0) * h.word_delay_ns + h.cs_setup_ns + h.cs_delay_hold_ns
        if h.cs_change:
            ns += h.cs_change_delay_inactive_ns
    return ns / 1e9


__all__ = ["I2C_BYTE_CLOCKS", "I2C_START_CLOCKS", "i2c_clocks", "i2c_wire_time",
           "spi_wire_time"]
