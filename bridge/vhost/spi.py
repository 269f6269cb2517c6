"""virtio-spi device side: transfer_head chains → SPI frames, rx data and result back.

Linux's driver keeps one transfer in flight, so each chain is its own frame.
Parameters are checked against the board's advertised config before sending,
so a PARAM_ERR costs no round trip and never reaches the bus.

The driver hands over one transfer at a time and marks neither the end of a
message nor its transfers as belonging together (``cs_change`` is 0 on every
transfer of a plain message, the last one included), so each transfer runs
as its own SPI message and chip select is released after it.  A guest message
that writes a command in one transfer and reads the answer in the next gets
wrong data with status OK.  The agent cannot tell that pattern from two
one-transfer messages, so it warns, once per chip select, the first time it
sees two consecutive transfers on one chip select, the first with
``cs_change = 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from protocol.virtio import (
    SPI_TRANSFER_HEAD_SIZE,
    VIRTIO_ID_SPI,
    SpiConfig,
    SpiResult,
    SpiTransfer,
    SpiTransferHead,
    check_spi_transfer,
)

from ..logs import event
from .device import VirtioDevice
from .link import ServerLink
from .messages import (
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_PROTOCOL_FEATURES,
    F_VERSION_1,
    PF_CONFIG,
    PF_CONFIGURE_MEM_SLOTS,
    PF_MQ,
    PF_REPLY_ACK,
)
from .virtqueue import Chain, Virtqueue

log = logging.getLogger("busbridge.vhost")

#: Refuse before copying: larger than any transfer a board accepts.
MAX_BUFFER = 1 << 20


def parse_spi(chain: Chain) -> tuple[SpiTransfer | None, str | None]:
    if chain.error:
        return None, chain.error
    if chain.in_len > MAX_BUFFER or chain.out_len > MAX_BUFFER:
        return None, "buffer larger than any SPI transfer"
    out = chain.read()
    if len(out) < SPI_TRANSFER_HEAD_SIZE:
        return None, f"transfer_head of {len(out)} bytes"
    if chain.out_len < 1:
        return None, "no result byte"
    head = SpiTransferHead.unpack(out[:SPI_TRANSFER_HEAD_SIZE])
    tx = out[SPI_TRANSFER_HEAD_SIZE:]
    return SpiTransfer(head, tx if tx else None, chain.out_len - 1), None


class VirtioSpiDevice(VirtioDevice):
    """A virtio-spi controller (VIRTIO_ID_SPI) advertising the board's ``config`` for ``bus``."""

    device_id = VIRTIO_ID_SPI
    features = F_VERSION_1 | F_PROTOCOL_FEATURES | F_INDIRECT_DESC | F_EVENT_IDX
    protocol_features = PF_MQ | PF_REPLY_ACK | PF_CONFIG | PF_CONFIGURE_MEM_SLOTS
    error_status: int = SpiResult.TRANS_ERR

    def __init__(self, link: ServerLink, bus: str, config: SpiConfig) -> None:
        super().__init__(link, bus)
        self.spi_config = config
        self._config_bytes = config.pack()
        #: (chip select, cs_change) of the previous transfer; chip selects warned about.
        self._previous: tuple[int, int] | None = None
        self.warned_cs: set[int] = set()

    def config(self) -> bytes:
        return self._config_bytes

    def handle(self, vq: Virtqueue, chains: Sequence[Chain]) -> None:
        for c in chains:
            t, why = parse_spi(c)
            if t is None:
                event(log, logging.INFO, "malformed spi request", head=c.head, reason=why)
                self.fail(vq, c, SpiResult.PARAM_ERR if c.out_len else None)
                continue
            why = check_spi_transfer(t, self.spi_config)
            if why is not None:
                event(log, logging.INFO, "spi parameters refused", head=c.head, reason=why)
                self.fail(vq, c, SpiResult.PARAM_ERR)
                continue
            self._watch_chip_select(t.head)
            self.spawn(vq, [c], self._execute(vq, c, t))
        self.signal(vq)

    def _watch_chip_select(self, head: SpiTransferHead) -> None:
        """Warn once per chip select that CS is released between back-to-back transfers."""
        cs = head.chip_select_id
        previous, self._previous = self._previous, (cs, head.cs_change)
        if previous != (cs, 0) or cs in self.warned_cs:
            return
        self.warned_cs.add(cs)
        event(log, logging.WARNING,
              "spi transfers run as separate messages: chip select released between them",
              bus=self.bus, cs=cs,
              why="Linux's virtio-spi driver does not mark where a message ends; a message "
                  "that writes a command in one transfer and reads in the next gets wrong "
                  "data with status OK",
              fix="send command and answer as one full-duplex transfer; see "
                  "docs/vhost-user.md (SPI)")

    async def _execute(self, vq: Virtqueue, chain: Chain, t: SpiTransfer) -> None:
        client = await self.link.client()
        result = await client.spi(self.bus, t.head.chip_select_id, [t])
        status = result.status[0] if result.status else self.error_status
        if status == SpiResult.TRANS_OK:
            data = result.reads[0] if (t.rx_len and result.reads) else b""
            self.finish(vq, chain, SpiResult.TRANS_OK, data[:t.rx_len])
        else:
            self.fail(vq, chain, status)
