"""vhost-user message codes, flags and payload layouts (QEMU ``docs/interop/vhost-user.rst``).

Fields are host-endian; the agent only runs where the host is little-endian
(x86, arm64), which is also what QEMU assumes for its front end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct("<III")
HEADER_SIZE = HEADER.size  # 12
VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
#: Payloads are small; QEMU never sends more than a memory table of 8 regions.
MAX_PAYLOAD = 4096
MAX_FDS = 8

U64 = struct.Struct("<Q")
VRING_STATE = struct.Struct("<II")
VRING_ADDR = struct.Struct("<IIQQQQ")
MEM_REGION = struct.Struct("<QQQQ")
MEM_TABLE_HEAD = struct.Struct("<II")
CONFIG_HEAD = struct.Struct("<III")
VRING_FILE_INDEX_MASK = 0xFF
VRING_FILE_NOFD = 0x100


class Req(IntEnum):
    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_SLAVE_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


#: Requests whose reply is part of the request itself (not a REPLY_ACK).
REPLYING = frozenset({
    Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM, Req.GET_VRING_BASE,
    Req.GET_CONFIG, Req.GET_MAX_MEM_SLOTS, Req.GET_STATUS,
})

# Virtio feature bits the agent deals with.
F_NOTIFY_ON_EMPTY = 1 << 24
F_INDIRECT_DESC = 1 << 28
F_EVENT_IDX = 1 << 29
F_PROTOCOL_FEATURES = 1 << 30
F_VERSION_1 = 1 << 32

# Protocol feature bits.
PF_MQ = 1 << 0
PF_REPLY_ACK = 1 << 3
PF_CONFIG = 1 << 9
PF_CONFIGURE_MEM_SLOTS = 1 << 15

MAX_MEM_SLOTS = 32


@dataclass(frozen=True, slots=True)
class Region:
    """One guest memory region as QEMU describes it."""

    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int

    @classmethod
    def unpack_from(cls, data: bytes, offset: int = 0) -> Region:
        return cls(*MEM_REGION.unpack_from(data, offset))

    def pack(self) -> bytes:
        return MEM_REGION.pack(self.guest_phys_addr, self.memory_size, self.userspace_addr,
                               self.mmap_offset)


@dataclass(frozen=True, slots=True)
class VringAddr:
    index: int
    flags: int
    desc: int
    used: int
    avail: int
    log: int

    @classmethod
    def unpack(cls, data: bytes) -> VringAddr:
        return cls(*VRING_ADDR.unpack_from(data))

    def pack(self) -> bytes:
        return VRING_ADDR.pack(self.index, self.flags, self.desc, self.used, self.avail, self.log)


def header(request: int, flags: int, size: int) -> bytes:
    return HEADER.pack(request, flags, size)


def reply(request: int, payload: bytes) -> bytes:
    """A reply: flags are exactly VERSION|REPLY, which QEMU insists on."""
    return HEADER.pack(request, VERSION | FLAG_REPLY, len(payload)) + payload


def mem_table(regions: list[Region]) -> bytes:
    return MEM_TABLE_HEAD.pack(len(regions), 0) + b"".join(r.pack() for r in regions)


def parse_mem_table(payload: bytes) -> list[Region]:
    if len(payload) < MEM_TABLE_HEAD.size:
        raise ValueError("memory table too short")
    n, _pad = MEM_TABLE_HEAD.unpack_from(payload)
    if n > MAX_FDS or len(payload) < MEM_TABLE_HEAD.size + n * MEM_REGION.size:
        raise ValueError(f"memory table with {n} regions does not fit its {len(payload)} bytes")
    return [Region.unpack_from(payload, MEM_TABLE_HEAD.size + i * MEM_REGION.size)
            for i in range(n)]
