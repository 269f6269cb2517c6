"""Guest memory shared by QEMU: regions mapped from the fds it sends.

Descriptors carry guest-physical addresses, SET_VRING_ADDR carries QEMU's
own virtual addresses; both are translated here, and every access is
bounds-checked against one region so a hostile or buggy guest cannot make
the agent touch anything outside guest RAM.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

from .messages import Region


class GuestMemoryError(ValueError):
    """An address range that is not inside one mapped region."""


@dataclass(slots=True)
class Mapped:
    region: Region
    fd: int
    mm: mmap.mmap


class GuestMemory:
    """The current memory table; replaced as a whole or a region at a time."""

    def __init__(self) -> None:
        self.regions: list[Mapped] = []

    def add(self, region: Region, fd: int) -> None:
        """Map ``fd`` (ownership passes here; it is closed on removal)."""
        try:
            size = region.mmap_offset + region.memory_size
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self.regions.append(Mapped(region, fd, mm))

    def remove(self, region: Region) -> bool:
        for i, m in enumerate(self.regions):
            r = m.region
            if (r.guest_phys_addr, r.memory_size, r.userspace_addr) == (
                    region.guest_phys_addr, region.memory_size, region.userspace_addr):
                del self.regions[i]
                self._unmap(m)
                return True
        return False

    def clear(self) -> None:
        regions, self.regions = self.regions, []
        for m in regions:
            self._unmap(m)

    @staticmethod
    def _unmap(m: Mapped) -> None:
        m.mm.close()
        os.close(m.fd)

    def gpa(self, addr: int, length: int) -> tuple[mmap.mmap, int]:
        """Guest-physical ``[addr, addr+length)`` → (mapping, offset)."""
        for m in self.regions:
            r = m.region
            start = addr - r.guest_phys_addr
            if start >= 0 and start + length <= r.memory_size:
                return m.mm, r.mmap_offset + start
        raise GuestMemoryError(f"guest range {addr:#x}+{length} is not in guest memory")

    def uva(self, addr: int, length: int) -> tuple[mmap.mmap, int]:
        """QEMU-virtual ``[addr, addr+length)`` → (mapping, offset)."""
        for m in self.regions:
            r = m.region
            start = addr - r.userspace_addr
            if start >= 0 and start + length <= r.memory_size:
                return m.mm, r.mmap_offset + start
        raise GuestMemoryError(f"QEMU address range {addr:#x}+{length} is not in guest memory")


class Area:
    """A bounds-checked window on one mapping (a ring or a buffer)."""

    __slots__ = ("length", "mm", "off")

    def __init__(self, mm: mmap.mmap, off: int, length: int) -> None:
        self.mm = mm
        self.off = off
        self.length = length

    def _check(self, pos: int, n: int) -> int:
        if pos < 0 or pos + n > self.length:
            raise GuestMemoryError(f"access {pos}+{n} outside an area of {self.length} bytes")
        return self.off + pos

    def read(self, pos: int = 0, n: int | None = None) -> bytes:
        n = self.length - pos if n is None else n
        at = self._check(pos, n)
        return self.mm[at:at + n]

    def write(self, pos: int, data: bytes) -> None:
        at = self._check(pos, len(data))
        self.mm[at:at + len(data)] = data

    def u16(self, pos: int) -> int:
        return int(struct.unpack_from("<H", self.mm, self._check(pos, 2))[0])

    def set_u16(self, pos: int, value: int) -> None:
        struct.pack_into("<H", self.mm, self._check(pos, 2), value & 0xFFFF)
