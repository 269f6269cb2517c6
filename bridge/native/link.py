"""The agent's side of busbridge: a small pool of blocking clients and the errno rules.

Several programs (and threads) may use the agent at once, so the link hands
each call an idle :class:`~bridge.client.BlockingClient` (or opens one), with
the URL, board name, TLS, token and lease tokens ``busbridge run`` gave the
command, exactly as the Python drop-ins read them.  Nothing is re-sent: a call
whose connection drops fails with EIO and the next call reconnects.

What the kernel cannot say about a remote bus is mapped to the errno a Linux
adapter uses for the nearest thing (docs/native.md has the table):

* an ERROR frame: the frame never reached the bus.  ``busy`` (a lease held by
  someone else) is EBUSY, what an adapter answers when another master holds
  the bus (i2c-i801's "SMBus is busy"); ``denied`` EACCES; ``rate-limited``
  EAGAIN; ``unknown-bus`` ENODEV (the adapter went away); ``shutting-down``
  ESHUTDOWN (an adapter that is suspended or gone, i2c-core and spidev);
  ``limit-exceeded`` and a local limit refusal EOPNOTSUPP (i2c-core's answer
  to a transfer the adapter's quirks forbid); anything else EIO;
* no answer in time: ETIMEDOUT; connection lost or board unreachable: EIO.

A RESULT is a bus outcome, and the callers turn its status bytes into what
the kernel's drivers return (short counts, EIO); see i2cdev.py and spidev.py.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from protocol.errors import ErrorCode
from protocol.events import Result
from protocol.handshake import WelcomeInfo
from protocol.virtio import I2CMsg, SpiTransfer

from ..client import BlockingClient, ConnectionLost, RemoteError
from ..client.auth import ClientAuth
from ..dropin.session import env_leases, target_address
from ..env import BOARD as ENV_BOARD
from ..env import BROKER as ENV_BROKER
from ..env import TIMEOUT as ENV_TIMEOUT
from ..env import URL as ENV_URL

log = logging.getLogger("busbridge.native")
T = TypeVar("T")

REMOTE_ERRNO: Mapping[ErrorCode, int] = {
    ErrorCode.BUSY: errno.EBUSY,
    ErrorCode.DENIED: errno.EACCES,
    ErrorCode.RATE_LIMITED: errno.EAGAIN,
    ErrorCode.UNKNOWN_BUS: errno.ENODEV,
    ErrorCode.SHUTTING_DOWN: errno.ESHUTDOWN,
    ErrorCode.LIMIT_EXCEEDED: errno.EOPNOTSUPP,
    ErrorCode.TIMEOUT: errno.ETIMEDOUT,
}
#: Idle connections kept for the next caller.
MAX_IDLE = 4
#: A thread's own connection is checked for a close by the server (a select()) only
#: after this long unused; a busy one is not checked call after call.
RECHECK_AFTER_S = 1.0


class ClientPool:
    """Bus calls for the agent, each on a client of its own while it runs."""

    def __init__(self, env: Mapping[str, str], *, name: str = "busbridge-native") -> None:
        self.url = env.get(ENV_URL, "")
        self.board = env.get(ENV_BOARD, "") if not self.url else ""
        self.broker = env.get(ENV_BROKER) or None
        if not self.url and not self.board:
            self.url = "127.0.0.1:7707"
        raw = env.get(ENV_TIMEOUT, "")
        self.timeout = float(raw) if raw else 5.0
        self._auth = ClientAuth.from_env(env)
        self._leases = env_leases(env)
        self._name = name
        self._idle: list[BlockingClient] = []
        self._lock = threading.Lock()
        self._welcome: WelcomeInfo | None = None
        self._said: set[str] = set()
        #: Each serving thread (one per process of the command) keeps a connection
        #: while it lives: no pool lock and no liveness check per call.
        self._mine = threading.local()

    @property
    def where(self) -> str:
        return self.url or f"board {self.board}"

    def _open(self) -> BlockingClient:
        host, port = target_address(self.url, self.board or None, self.broker, self.timeout)
        return BlockingClient(host, port, timeout=self.timeout, name=self._name,
                              leases=self._leases, auth=self._auth)

    def _acquire(self) -> BlockingClient:
        c: BlockingClient | None = getattr(self._mine, "client", None)
        if c is not None:
            self._mine.client = None
            if time.monotonic() - self._mine.used < RECHECK_AFTER_S or c.connected:
                return c
            c.close()
        with self._lock:
            while self._idle:
                c = self._idle.pop()
                if c.connected:
                    return c
                c.close()
        try:
            return self._open()
        except RemoteError as e:
            self._say(f"the busbridge server at {self.where} refused the connection: {e}")
            raise OSError(errno.EACCES if e.code == ErrorCode.UNAUTHORIZED else errno.EIO,
                          str(e)) from None
        except ImportError:
            raise OSError(errno.EIO, "finding a board by name needs busbridge[mqtt]") from None
        except OSError as e:
            self._say(f"cannot reach the busbridge server at {self.where}: {e.strerror or e}")
            raise OSError(errno.EIO, str(e)) from None

    def _release(self, c: BlockingClient) -> None:
        """Back to this thread; the pool gets it when the thread is done (``done``)."""
        self._mine.client = c
        self._mine.used = time.monotonic()

    def done(self) -> None:
        """The calling thread serves no more: its connection goes to the pool."""
        c: BlockingClient | None = getattr(self._mine, "client", None)
        self._mine.client = None
        if c is None:
            return
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(c)
                return
        c.close()

    def _say(self, message: str) -> None:
        """One warning per distinct message: native programs cannot show the server's words."""
        if message not in self._said and len(self._said) < 100:
            self._said.add(message)
            log.warning("%s", message)

    def call(self, fn: Callable[[BlockingClient], T], what: str, *, local: int) -> T:
        """Run ``fn`` on a client; refusals and connection trouble become OSError(errno).

        ``local`` is the errno for a frame refused before sending (a limit).
        """
        c = self._acquire()
        try:
            out = fn(c)
        except RemoteError as e:
            self._release(c)
            self._say(f"{what}: {e.message}")
            raise OSError(REMOTE_ERRNO.get(e.code, errno.EIO), e.message) from None
        except ValueError as e:  # refused locally: over the server's advertised limits
            self._release(c)
            self._say(f"{what}: {e}")
            raise OSError(local, str(e)) from None
        except TimeoutError as e:
            c.close()  # its late answer would confuse the next caller
            self._say(f"{what}: {e.strerror or e}")
            raise OSError(errno.ETIMEDOUT, str(e)) from None
        except (ConnectionLost, OSError) as e:
            c.close()
            self._say(f"{what}: {e}")
            raise OSError(errno.EIO, str(e)) from None
        self._release(c)
        return out

    def welcome(self) -> WelcomeInfo:
        """The board's buses (asked once; a failure is ENODEV, as for a vanished adapter)."""
        if self._welcome is None:
            try:
                self._welcome = self.call(lambda c: c.welcome, "connect", local=errno.EIO)
            except OSError as e:
                raise OSError(errno.ENODEV, e.strerror) from None
        return self._welcome

    def i2c(self, bus: str, msgs: Sequence[I2CMsg], timeout_ms: int | None) -> Result:
        t = None if timeout_ms is None else timeout_ms / 1000
        return self.call(lambda c: c.i2c(bus, msgs, timeout=t), f"i2c bus {bus}",
                         local=errno.EOPNOTSUPP)

    def spi(self, bus: str, cs: int, transfers: Sequence[SpiTransfer]) -> Result:
        return self.call(lambda c: c.spi(bus, cs, transfers), f"spi bus {bus} cs {cs}",
                         local=errno.EMSGSIZE)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()
