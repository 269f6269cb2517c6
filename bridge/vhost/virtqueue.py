"""Split virtqueue, device side: descriptor chains in, used elements out.

Handles direct and indirect descriptors and VIRTIO_F_EVENT_IDX.  QEMU 7.2
hands both features to the guest whatever the back end offered, so neither is
optional.  A chain that cannot be walked (bad index, loop, address outside
guest memory, readable after writable, nested indirect) is still returned,
marked with ``error``, so the device completes it and the guest never waits.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from .memory import Area, GuestMemory, GuestMemoryError

DESC = struct.Struct("<QIHH")
DESC_SIZE = DESC.size  # 16
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_AVAIL_F_NO_INTERRUPT = 1
USED_ELEM = struct.Struct("<II")
MAX_QUEUE_SIZE = 32768


class ChainError(ValueError):
    pass


@dataclass(slots=True)
class Chain:
    """One request: its readable and writable buffers, in order."""

    head: int
    readable: list[Area] = field(default_factory=list)
    writable: list[Area] = field(default_factory=list)
    error: str | None = None
    done: bool = False

    @property
    def in_len(self) -> int:
        return sum(a.length for a in self.readable)

    @property
    def out_len(self) -> int:
        return sum(a.length for a in self.writable)

    def read(self) -> bytes:
        return b"".join(a.read() for a in self.readable)

    def write(self, data: bytes) -> int:
        """Scatter ``data`` from the start of the writable buffers; returns bytes written."""
        pos = 0
        for a in self.writable:
            if pos >= len(data):
                break
            n = min(a.length, len(data) - pos)
            a.write(0, data[pos:pos + n])
            pos += n
        return pos

    def write_last_byte(self, value: int) -> bool:
        """Write the trailing status / result byte; False if there is no writable byte."""
        for a in reversed(self.writable):
            if a.length:
                a.write(a.length - 1, bytes([value]))
                return True
        return False


def vring_need_event(event: int, new: int, old: int) -> bool:
    """Linux's ``vring_need_event``: did ``[old, new)`` cross ``event``?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


class Virtqueue:
    """One split ring.  Addresses come from SET_VRING_ADDR (QEMU-virtual)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.size = 0
        self.desc_addr = self.avail_addr = self.used_addr = 0
        self.last_avail = 0
        self.used_idx = 0
        self.kick_fd: int | None = None
        self.call_fd: int | None = None
        self.err_fd: int | None = None
        self.enabled = False
        self.started = False
        self.event_idx = False
        self.indirect = True
        self._desc: Area | None = None
        self._avail: Area | None = None
        self._used: Area | None = None
        self._signalled_used = 0
        self.mem: GuestMemory | None = None

    # -- set-up -------------------------------------------------------------

    def map(self, mem: GuestMemory) -> None:
        """Resolve the ring addresses in ``mem``; raises if they are not in guest memory."""
        if not 0 < self.size <= MAX_QUEUE_SIZE or self.size & (self.size - 1):
            raise ChainError(f"queue size {self.size} is not a power of two up to 32768")
        q = self.size
        extra = 2 if self.event_idx else 0
        self.mem = mem
        self._desc = Area(*mem.uva(self.desc_addr, DESC_SIZE * q), DESC_SIZE * q)
        self._avail = Area(*mem.uva(self.avail_addr, 4 + 2 * q + extra), 4 + 2 * q + extra)
        self._used = Area(*mem.uva(self.used_addr, 4 + 8 * q + extra), 4 + 8 * q + extra)
        self.used_idx = self._used.u16(2)
        self._signalled_used = self.used_idx

    def unmap(self) -> None:
        self._desc = self._avail = self._used = None
        self.mem = None

    @property
    def ready(self) -> bool:
        return self.started and self.enabled and self._desc is not None

    def close_fds(self) -> None:
        for name in ("kick_fd", "call_fd", "err_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    # -- driver → device ------------------------------------------------------

    def avail_idx(self) -> int:
        assert self._avail is not None
        return self._avail.u16(2)

    def pending(self) -> int:
        return (self.avail_idx() - self.last_avail) & 0xFFFF

    def pop(self) -> Chain | None:
        """Next available chain, or None when the ring is empty."""
        if self._avail is None or self.mem is None:
            return None
        n = self.pending()
        if n == 0:
            return None
        if n > self.size:
            raise ChainError(f"avail idx ran {n} entries ahead of a {self.size}-entry ring")
        head = self._avail.u16(4 + 2 * (self.last_avail % self.size))
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        chain = Chain(head)
        try:
            self._walk(chain)
        except (ChainError, GuestMemoryError) as e:
            chain.error = str(e)
        return chain

    def _walk(self, chain: Chain) -> None:
        assert self._desc is not None
        assert self.mem is not None
        if chain.head >= self.size:
            raise ChainError(f"head index {chain.head} outside a {self.size}-entry ring")
        table: Area = self._desc
        limit = self.size
        i = chain.head
        seen = 0
        indirect = False
        while True:
            if i >= limit:
                raise ChainError(f"descriptor index {i} outside a table of {limit}")
            seen += 1
            if seen > limit:
                raise ChainError("descriptor chain loops")
            addr, length, flags, nxt = DESC.unpack(table.read(i * DESC_SIZE, DESC_SIZE))
            if flags & VRING_DESC_F_INDIRECT:
                if indirect:
                    raise ChainError("nested indirect descriptor")
                if flags & VRING_DESC_F_NEXT:
                    raise ChainError("indirect descriptor with NEXT")
                if length == 0 or length % DESC_SIZE:
                    raise ChainError(f"indirect table of {length} bytes")
                table = Area(*self.mem.gpa(addr, length), length)
                limit = length // DESC_SIZE
                indirect = True
                i = 0
                seen = 0
                continue
            try:
                area = Area(*self.mem.gpa(addr, length), length)
            except GuestMemoryError as e:
                # Keep walking: the status byte further on may still be reachable,
                # and an ERR there is better than a driver reading its own zeroes.
                chain.error = chain.error or str(e)
                area = Area(self._desc.mm, 0, 0)
            if flags & VRING_DESC_F_WRITE:
                chain.writable.append(area)
            elif chain.writable:
                raise ChainError("readable descriptor after a writable one")
            else:
                chain.readable.append(area)
            if not flags & VRING_DESC_F_NEXT:
                return
            i = nxt

    # -- device → driver --------------------------------------------------------

    def push(self, chain: Chain, written: int) -> None:
        """Publish ``chain`` as used with ``written`` bytes written into it."""
        if chain.done:
            return
        chain.done = True
        if self._used is None:
            return  # ring stopped meanwhile: the guest has reset it
        slot = 4 + 8 * (self.used_idx % self.size)
        self._used.write(slot, USED_ELEM.pack(chain.head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self._used.set_u16(2, self.used_idx)

    def publish_avail_event(self) -> None:
        """Tell the driver to kick for the next entry after those already taken."""
        if self.event_idx and self._used is not None:
            self._used.set_u16(4 + 8 * self.size, self.last_avail)

    def signal(self) -> None:
        """Interrupt the guest if the driver wants it for the entries used since the last one."""
        if self._avail is None or self.used_idx == self._signalled_used:
            return
        old, new = self._signalled_used, self.used_idx
        if self.event_idx:
            want = vring_need_event(self._avail.u16(4 + 2 * self.size), new, old)
        else:
            want = not self._avail.u16(0) & VRING_AVAIL_F_NO_INTERRUPT
        self._signalled_used = new
        if want and self.call_fd is not None:
            os.write(self.call_fd, (1).to_bytes(8, "little"))
