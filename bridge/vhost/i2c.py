"""virtio-i2c device side: descriptor chains → I2C frames, statuses and read data back.

A FAIL_NEXT group is one I2C transaction, so it travels in one frame and is
never split; a group whose last visible request still has FAIL_NEXT is held
until the driver queues the rest (Linux queues a whole transfer, then kicks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from protocol.virtio import (
    I2C_FLAGS_FAIL_NEXT,
    I2C_FLAGS_M_RD,
    I2C_OUT_HDR,
    I2C_OUT_HDR_SIZE,
    VIRTIO_I2C_F_ZERO_LENGTH_REQUEST,
    VIRTIO_ID_I2C_ADAPTER,
    I2CMsg,
    I2CStatus,
)

from ..logs import event
from .device import VirtioDevice
from .link import ServerLink
from .messages import (
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_PROTOCOL_FEATURES,
    F_VERSION_1,
    PF_CONFIGURE_MEM_SLOTS,
    PF_MQ,
    PF_REPLY_ACK,
)
from .virtqueue import Chain, Virtqueue

log = logging.getLogger("busbridge.vhost")

#: Refuse before copying: larger than any bus accepts (i2c-dev's own limit is 8 KiB).
MAX_BUFFER = 1 << 16

Item = tuple[Chain, I2CMsg | None, int]  # chain, parsed request (None: malformed), flags


def parse_i2c(chain: Chain) -> tuple[I2CMsg | None, int, str | None]:
    """``(request, flags, why_malformed)``; the layout is found from byte counts alone."""
    flags = 0
    if chain.error:
        return None, flags, chain.error
    if chain.in_len > MAX_BUFFER or chain.out_len > MAX_BUFFER:
        return None, flags, "buffer larger than any I2C message"
    out = chain.read()
    if len(out) >= I2C_OUT_HDR_SIZE:
        _addr, _pad, flags = I2C_OUT_HDR.unpack_from(out)
    else:
        return None, flags, f"out_hdr of {len(out)} bytes"
    n_in = chain.out_len
    if n_in < 1:
        return None, flags, "no status byte"
    is_read = bool(flags & I2C_FLAGS_M_RD)
    if is_read and len(out) != I2C_OUT_HDR_SIZE:
        return None, flags, "read request with write data"
    if not is_read and n_in != 1:
        return None, flags, "write request with a device-writable buffer"
    try:
        msg = I2CMsg.from_out_hdr(out[:I2C_OUT_HDR_SIZE],
                                  n_in - 1 if is_read else out[I2C_OUT_HDR_SIZE:])
    except ValueError as e:
        return None, flags, str(e)
    return msg, flags, None


class VirtioI2CDevice(VirtioDevice):
    """A virtio-i2c adapter (VIRTIO_ID_I2C_ADAPTER) whose transactions run on ``bus``."""

    device_id = VIRTIO_ID_I2C_ADAPTER
    features = (F_VERSION_1 | F_PROTOCOL_FEATURES | F_INDIRECT_DESC | F_EVENT_IDX
                | VIRTIO_I2C_F_ZERO_LENGTH_REQUEST)
    protocol_features = PF_MQ | PF_REPLY_ACK | PF_CONFIGURE_MEM_SLOTS
    error_status: int = I2CStatus.ERR

    def __init__(self, link: ServerLink, bus: str) -> None:
        super().__init__(link, bus)
        self.held: list[Item] = []

    def handle(self, vq: Virtqueue, chains: Sequence[Chain]) -> None:
        items = self.held
        self.held = []
        for c in chains:
            msg, flags, why = parse_i2c(c)
            if why is not None:
                event(log, logging.INFO, "malformed i2c request", head=c.head, reason=why)
            items.append((c, msg, flags))
        groups: list[list[Item]] = []
        cur: list[Item] = []
        for it in items:
            cur.append(it)
            if not it[2] & I2C_FLAGS_FAIL_NEXT:
                groups.append(cur)
                cur = []
        if cur:
            if len(cur) < vq.size:
                self.held = cur  # the rest of the transaction is still to come
            else:
                groups.append(cur)  # the ring is full of one open group: it can never close
        good: list[list[Item]] = []
        for g in groups:
            if any(m is None for _, m, _ in g) or g[-1][2] & I2C_FLAGS_FAIL_NEXT:
                for c, _, _ in g:
                    self.fail(vq, c)
            else:
                good.append(g)
        self.signal(vq)
        limit = self._max_requests()
        frame: list[list[Item]] = []
        for g in good:
            if frame and sum(len(x) for x in frame) + len(g) > limit:
                self._send(vq, frame)
                frame = []
            frame.append(g)
        if frame:
            self._send(vq, frame)

    def _max_requests(self) -> int:
        w = self.link.welcome
        return w.limits.max_requests if w is not None else 64

    def _send(self, vq: Virtqueue, groups: list[list[Item]]) -> None:
        items = [it for g in groups for it in g]
        self.spawn(vq, [c for c, _, _ in items], self._execute(vq, items))

    async def _execute(self, vq: Virtqueue, items: list[Item]) -> None:
        msgs = [m for _, m, _ in items if m is not None]
        client = await self.link.client()
        result = await client.i2c(self.bus, msgs)
        reads = iter(result.reads)
        for (chain, msg, _), status in zip(items, result.status, strict=False):
            assert msg is not None
            data = next(reads, b"") if msg.is_read else b""
            if status == I2CStatus.OK:
                self.finish(vq, chain, I2CStatus.OK, data[:msg.length])
            else:
                self.fail(vq, chain)

    def stop(self, vq: Virtqueue) -> None:
        held, self.held = self.held, []
        for c, _, _ in held:
            self.fail(vq, c)
        self.signal(vq)
