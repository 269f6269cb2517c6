"""The vhost-user back end: one QEMU front end at a time on a unix socket.

Messages are handled strictly in order (QEMU waits for replies it asked for);
kicks arrive on eventfds watched by the same event loop, so ring state is only
ever touched from one thread.  When QEMU goes away (guest power-off, QEMU
restart) the state is dropped and the next connection starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from ..logs import event
from . import messages
from .channel import Channel, VhostUserError
from .device import VirtioDevice
from .messages import Req
from .rings import Rings, u64

log = logging.getLogger("busbridge.vhost")

class FrontEndSession:
    """State of one front-end connection."""

    def __init__(self, device: VirtioDevice, sock: socket.socket, n_queues: int = 1) -> None:
        self.device = device
        self.channel = Channel(sock)
        self.rings = Rings(device, n_queues)
        self.mem = self.rings.mem
        self.queues = self.rings.queues
        self.loop = self.rings.loop  # kicks and replies share the one event loop
        self.features = 0
        self.protocol_features = 0
        self.seen: list[str] = []  # request names seen, kept short, for diagnostics

    # -- the message loop ------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                try:
                    request, flags, payload, fds = await self.channel.receive()
                except EOFError:
                    return
                await self._one(request, flags, payload, fds)
        finally:
            await self.close()

    async def _one(self, request: int, flags: int, payload: bytes, fds: list[int]) -> None:
        try:
            name = Req(request).name
        except ValueError:
            name = str(request)
        if len(self.seen) < 200:
            self.seen.append(name)
        event(log, logging.DEBUG, "vhost-user message", request=name, size=len(payload),
              fds=len(fds))
        handler: Callable[[bytes, list[int]], object] | None = getattr(
            self, f"_h_{name.lower()}", None)
        ok = True
        answer: bytes | None = None
        try:
            if handler is None:
                ok = False
                event(log, logging.INFO, "unsupported vhost-user message", request=name)
                for fd in fds:
                    os.close(fd)
            else:
                res = handler(payload, fds)
                if asyncio.iscoroutine(res):
                    res = await res
                if isinstance(res, bytes):
                    answer = res
        except Exception as e:
            # A refused message must not take the guest's other state down with it.
            ok = False
            event(log, logging.WARNING, "vhost-user message failed", request=name, error=str(e))
        if answer is not None:
            await self.channel.send(messages.reply(request, answer))
        elif request in messages.REPLYING:
            # Must answer something or QEMU waits forever.
            await self.channel.send(messages.reply(request, messages.U64.pack(0)))
        elif flags & messages.FLAG_NEED_REPLY:
            await self.channel.send(messages.reply(request, messages.U64.pack(0 if ok else 1)))

    async def close(self) -> None:
        for vq in self.queues:
            await self.rings.stop(vq)
            vq.close_fds()
        self.mem.clear()

    # -- handlers ------------------------------------------------------------------------------

    def _h_get_features(self, payload: bytes, fds: list[int]) -> bytes:
        return messages.U64.pack(self.device.features)

    def _h_set_features(self, payload: bytes, fds: list[int]) -> None:
        self.features = u64(payload)
        for vq in self.queues:
            vq.event_idx = bool(self.features & messages.F_EVENT_IDX)
            vq.indirect = bool(self.features & messages.F_INDIRECT_DESC)

    def _h_get_protocol_features(self, payload: bytes, fds: list[int]) -> bytes:
        return messages.U64.pack(self.device.protocol_features)

    def _h_set_protocol_features(self, payload: bytes, fds: list[int]) -> None:
        self.protocol_features = u64(payload) & self.device.protocol_features

    def _h_get_queue_num(self, payload: bytes, fds: list[int]) -> bytes:
        return messages.U64.pack(len(self.queues))

    def _h_get_max_mem_slots(self, payload: bytes, fds: list[int]) -> bytes:
        return messages.U64.pack(messages.MAX_MEM_SLOTS)

    def _h_set_owner(self, payload: bytes, fds: list[int]) -> None:
        pass

    async def _h_reset_owner(self, payload: bytes, fds: list[int]) -> None:
        for vq in self.queues:
            await self.rings.stop(vq)
            vq.enabled = False
        self.features = 0

    async def _h_reset_device(self, payload: bytes, fds: list[int]) -> None:
        # A method, not an alias of _h_reset_owner: the compiled build (mypyc) cannot alias.
        await self._h_reset_owner(payload, fds)

    def _h_set_mem_table(self, payload: bytes, fds: list[int]) -> None:
        try:
            regions = messages.parse_mem_table(payload)
            if len(fds) != len(regions):
                raise VhostUserError(f"memory table of {len(regions)} regions came with "
                                     f"{len(fds)} fds (is the guest memory share=on?)")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self.mem.clear()
        for r, fd in zip(regions, fds, strict=True):
            self.mem.add(r, fd)
        self.rings.remap()

    def _h_add_mem_reg(self, payload: bytes, fds: list[int]) -> None:
        if len(payload) < 8 + messages.MEM_REGION.size or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise VhostUserError("ADD_MEM_REG needs one region and one fd")
        self.mem.add(messages.Region.unpack_from(payload, 8), fds[0])
        self.rings.remap()

    def _h_rem_mem_reg(self, payload: bytes, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        if len(payload) < 8 + messages.MEM_REGION.size:
            raise VhostUserError("REM_MEM_REG without a region")
        region = messages.Region.unpack_from(payload, 8)
        for vq in self.queues:
            if vq.mem is not None:
                vq.unmap()
        self.mem.remove(region)
        self.rings.remap()

    def _h_set_vring_num(self, payload: bytes, fds: list[int]) -> None:
        index, num = messages.VRING_STATE.unpack_from(payload)
        self.rings.vq(index).size = num

    def _h_set_vring_base(self, payload: bytes, fds: list[int]) -> None:
        index, num = messages.VRING_STATE.unpack_from(payload)
        vq = self.rings.vq(index)
        vq.last_avail = num & 0xFFFF

    def _h_set_vring_addr(self, payload: bytes, fds: list[int]) -> None:
        a = messages.VringAddr.unpack(payload)
        vq = self.rings.vq(a.index)
        vq.desc_addr, vq.used_addr, vq.avail_addr = a.desc, a.used, a.avail
        vq.map(self.mem)

    async def _h_get_vring_base(self, payload: bytes, fds: list[int]) -> bytes:
        index, _ = messages.VRING_STATE.unpack_from(payload)
        vq = self.rings.vq(index)
        await self.rings.stop(vq)
        vq.enabled = False
        if vq.kick_fd is not None:
            os.close(vq.kick_fd)
            vq.kick_fd = None
        return messages.VRING_STATE.pack(index, vq.last_avail)

    def _h_set_vring_kick(self, payload: bytes, fds: list[int]) -> None:
        vq = self.rings.set_fd(payload, fds, "kick_fd")
        if vq.kick_fd is not None:
            os.set_blocking(vq.kick_fd, False)
            self.loop.add_reader(vq.kick_fd, self.rings.on_kick, vq)
        vq.started = True
        if not self.features & messages.F_PROTOCOL_FEATURES:
            vq.enabled = True
        if vq.mem is None:
            self.rings.remap()
        self.rings.process(vq)

    def _h_set_vring_call(self, payload: bytes, fds: list[int]) -> None:
        self.rings.set_fd(payload, fds, "call_fd")

    def _h_set_vring_err(self, payload: bytes, fds: list[int]) -> None:
        self.rings.set_fd(payload, fds, "err_fd")

    def _h_set_vring_enable(self, payload: bytes, fds: list[int]) -> None:
        index, num = messages.VRING_STATE.unpack_from(payload)
        vq = self.rings.vq(index)
        vq.enabled = bool(num)
        self.rings.process(vq)

    def _h_get_config(self, payload: bytes, fds: list[int]) -> bytes:
        offset, size, flags = messages.CONFIG_HEAD.unpack_from(payload)
        space = self.device.config()
        data = space[offset:offset + size].ljust(size, b"\0")
        return messages.CONFIG_HEAD.pack(offset, size, flags) + data

    def _h_set_config(self, payload: bytes, fds: list[int]) -> None:
        pass  # read-only config space: the spec asks drivers not to write it

    def _h_set_slave_req_fd(self, payload: bytes, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)

    def _h_set_log_fd(self, payload: bytes, fds: list[int]) -> None:
        self._h_set_slave_req_fd(payload, fds)

    def _h_get_status(self, payload: bytes, fds: list[int]) -> bytes:
        return messages.U64.pack(0)


class VhostUserBackend:
    """Listen on ``path`` and serve one front end at a time, forever."""

    def __init__(self, device: VirtioDevice, path: str) -> None:
        self.device = device
        self.path = path
        self.sessions = 0
        self.last_session: FrontEndSession | None = None
        self._listener: socket.socket | None = None
        self._ready = asyncio.Event()

    def listen(self) -> None:
        """Bind under a temporary name, then rename: the path appears only once it accepts."""
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(tmp)
            s.listen(1)
            os.replace(tmp, self.path)
        except BaseException:
            s.close()
            raise
        s.setblocking(False)
        self._listener = s

    async def serve_forever(self) -> None:
        if self._listener is None:
            self.listen()
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                conn, _ = await loop.sock_accept(self._listener)
                conn.setblocking(False)
                self.sessions += 1
                event(log, logging.INFO, "front end connected", socket=self.path)
                session = FrontEndSession(self.device, conn)
                self.last_session = session
                try:
                    await session.run()
                except (VhostUserError, OSError) as e:
                    event(log, logging.WARNING, "front end dropped", error=str(e))
                finally:
                    conn.close()
                event(log, logging.INFO, "front end gone", socket=self.path,
                      messages=len(session.seen))
        finally:
            self.close()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
