"""What the server needs from a bus: one blocking call per transaction.

Backends are synchronous on purpose: real buses are driven with blocking
ioctls.  The server gives every bus its own worker, so a backend never sees
two transactions at once; only one that says it cannot block (``may_block``)
ever runs on the event loop, and then only for a cheap frame on an idle bus.
The wire-time model lives here too: the simulator sleeps by it and the server
budgets bus time and deadlines by it, so both must agree.
"""

from __future__ import annotations

import errno as _errno
from abc import ABC, abstractmethod
from collections.abc import Sequence

from protocol.handshake import I2C_FUNC_I2C, I2CBusInfo, SpiBusInfo
from protocol.virtio import I2CMsg, SpiConfig, SpiTransfer, bytes_per_word

# -- wire time ------------------------------------------------------------------
# How long a transaction keeps a bus busy on the wire, from its lengths and the bus clock.
#
# One model, used by the simulator (to sleep that long when ``timing`` is on) and
# by the server (to budget bus time, to skip a transaction that cannot finish
# before its deadline, and to keep only cheap frames on the event loop).
#
# I2C: every message costs a START (or repeated START) and 9 clocks per byte
# (8 data bits and the ACK bit), its address bytes included (2 for a 10-bit
# address); a chain ends with one STOP.  SPI: ``bits_per_word`` clocks per word at
# the transfer's ``freq`` (else the controller's maximum), plus the head's
# delays.  Both are the time the bits need at that clock: a real adapter adds
# gaps and clock stretching, so it is a lower bound on a real bus's time.

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


class BusError(Exception):
    """A transaction failed on the bus.

    ``index`` is the position (within the chain or message handed to the
    backend) of the first request that failed; requests before it completed on
    the bus, the failed one and everything after it did not run.  Backends that
    cannot tell which one failed (a single I2C_RDWR ioctl) use 0.  Completed
    reads before ``index`` go in ``reads``; a read whose data is not handed
    back is reported as failed too.
    ``errno`` is the board-side errno a client sees (ENXIO for an address NACK,
    EREMOTEIO for a data NACK, ETIMEDOUT for a stuck bus, EIO otherwise).
    """

    def __init__(
        self, errno: int, message: str, index: int = 0, reads: Sequence[bytes] = ()
    ) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message
        self.index = index
        #: Data of the read messages before ``index`` that did complete, if known.
        self.reads = list(reads)

    @classmethod
    def nack(cls, what: str, index: int = 0) -> BusError:
        return cls(_errno.ENXIO, f"{what}: no ACK", index)


class I2CBackend(ABC):
    """One I2C adapter."""

    name: str
    description: str = ""
    #: Linux ``I2C_FUNC_*`` bits the adapter offers.
    functionality: int = I2C_FUNC_I2C
    max_msg_len: int = 8192

    @abstractmethod
    def transfer(self, msgs: Sequence[I2CMsg]) -> list[bytes]:
        """Run one FAIL_NEXT chain as ONE combined transaction.

        START, then each message with a repeated START before it, then one STOP.
        Returns the data of each read message, in order.  Raises
        :class:`BusError` on failure (see its ``index`` rule).  May block.
        """

    @property
    def may_block(self) -> bool:
        """False only if ``transfer`` returns in microseconds without sleeping or
        waiting on I/O; the server may then run it on the event loop when the
        bus has nothing queued.  Real buses block (ioctls): keep the default."""
        return True

    def wire_time(self, msgs: Sequence[I2CMsg]) -> float | None:
        """Seconds ``msgs`` need on the wire as one transaction, if the adapter knows
        its clock (:func:`i2c_wire_time`); None if it does not.  The server
        never starts a transaction that cannot end before its frame's deadline."""
        return None

    def info(self) -> I2CBusInfo:
        return I2CBusInfo(
            name=self.name,
            functionality=self.functionality,
            max_msg_len=self.max_msg_len,
            description=self.description,
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the adapter."""


class SpiBackend(ABC):
    """One SPI controller with ``config.cs_max_number`` chip selects."""

    name: str
    description: str = ""
    config: SpiConfig

    @abstractmethod
    def transfer(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[bytes]:
        """Run one SPI message on chip select ``cs``.

        Every transfer was already checked against ``config`` (no PARAM_ERR
        reaches a backend).  CS is asserted before the first transfer; after a
        transfer with ``cs_change`` = 1 it is deasserted and reasserted before
        the next one; it is deasserted after the last.  Returns the received
        bytes of each transfer with ``rx_len`` > 0, in order.  Raises
        :class:`BusError` when the message failed (TRANS_ERR).  May block.
        """

    @property
    def may_block(self) -> bool:
        """See :attr:`I2CBackend.may_block`."""
        return True

    def wire_time(self, transfers: Sequence[SpiTransfer]) -> float | None:
        """See :meth:`I2CBackend.wire_time`; ``transfers`` are one message."""
        return None

    def bulk(self, cs: int) -> bool:
        """Whether a message to ``cs`` costs this backend little per byte (no Python
        work per byte, as for a loopback): the server's estimate of the work of a
        message it may run inline then counts its transfers more than its bytes."""
        return False

    def check(self, cs: int, transfers: Sequence[SpiTransfer]) -> list[str | None]:
        """Why each transfer must get PARAM_ERR beyond what ``config`` can say, or None.

        For backend limits ``virtio_spi_config`` cannot express (spidev's
        delay field widths, one mode per message).  Runs on the event loop
        before anything reaches the bus: it must not block or touch the bus.
        """
        return [None] * len(transfers)

    def info(self) -> SpiBusInfo:
        return SpiBusInfo(name=self.name, config=self.config, description=self.description)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the controller."""
