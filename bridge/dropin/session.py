"""One shared connection per process, and the local-to-remote bus map.

Drop-in classes are constructed by code that knows nothing about busbridge
(``SMBus(1)``), so they find the board through a process-wide session
configured by :func:`connect` or, under ``busbridge run``, by the
environment (``BUSBRIDGE_URL``, ``BUSBRIDGE_MAP``, ``BUSBRIDGE_TIMEOUT``, and the
TLS/token variables of :class:`bridge.client.ClientAuth`). Without a URL,
``BUSBRIDGE_BOARD`` names the board to find through the MQTT broker
``BUSBRIDGE_BROKER``; the name is looked up again on every reconnect, so a board
that came back on another address is found.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from protocol.errors import ErrorCode
from protocol.handshake import WelcomeInfo
from protocol.leases import MAX_HELLO_LEASES, check_token

from .. import env
from ..client import Client, ConnectionLost, RemoteError, TransferError
from ..client.auth import ClientAuth
from ..client.blocking import BlockingClient
from ..client.requests import server_address

Kind = Literal["i2c", "spi"]
T = TypeVar("T")


def env_leases(environ: Mapping[str, str] | None = None) -> list[str]:
    """The lease tokens in ``$BUSBRIDGE_LEASE``; a bad entry is a ValueError that
    does not repeat it (it may be a mangled secret)."""
    raw = (os.environ if environ is None else environ).get(env.LEASE, "")
    tokens = [t for t in raw.replace(" ", ",").split(",") if t]
    for i, t in enumerate(tokens):
        if check_token(t) is not None:
            raise ValueError(f"{env.LEASE}: entry {i + 1} is not a lease token "
                             "(expected tokens printed by `busbridge lease take`, "
                             "comma-separated)")
    if len(tokens) > MAX_HELLO_LEASES:
        raise ValueError(f"{env.LEASE}: {len(tokens)} tokens; at most {MAX_HELLO_LEASES}")
    return list(dict.fromkeys(tokens))


@dataclass(frozen=True)
class BusMap:
    """Local bus numbers (``SMBus(1)``, ``SpiDev(0, cs)``) to remote bus names.

    A local number without an entry maps to the remote bus of the same name.
    """

    i2c: Mapping[str, str] = field(default_factory=dict)
    spi: Mapping[str, str] = field(default_factory=dict)
    #: Blinka pin name used as a GPIO chip select -> (local SPI bus, chip select).
    cs: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> BusMap:
        """``[i2c:|spi:]LOCAL=REMOTE`` entries (without a kind: both), and ``cs:PIN=BUS.CS``."""
        i2c: dict[str, str] = {}
        spi: dict[str, str] = {}
        cs: dict[str, tuple[int, int]] = {}
        for raw in entries:
            for item in raw.split(","):
                item = item.strip()
                if not item:
                    continue
                kind, sep, rest = item.partition(":")
                if kind == "cs" and sep:
                    pin, _, where = rest.partition("=")
                    bus, dot, sel = where.strip().partition(".")
                    if not pin.strip() or not dot or not bus.isdigit() or not sel.isdigit():
                        raise ValueError(f"bad chip-select entry {item!r}: expected cs:PIN=BUS.CS")
                    cs[pin.strip()] = (int(bus), int(sel))
                    continue
                if not sep or kind not in ("i2c", "spi"):
                    kind, rest = "", item
                local, eq, remote = rest.partition("=")
                local, remote = local.strip(), remote.strip()
                if not eq or not local or not remote:
                    raise ValueError(
                        f"bad bus map entry {item!r}: expected [i2c:|spi:]LOCAL=REMOTE"
                    )
                if kind in ("", "i2c"):
                    i2c[local] = remote
                if kind in ("", "spi"):
                    spi[local] = remote
        return cls(i2c, spi, cs)

    def format(self) -> str:
        return ",".join([f"i2c:{k}={v}" for k, v in self.i2c.items()]
                        + [f"spi:{k}={v}" for k, v in self.spi.items()]
                        + [f"cs:{k}={b}.{c}" for k, (b, c) in self.cs.items()])

    def remote(self, kind: Kind, local: int | str) -> str:
        table = self.i2c if kind == "i2c" else self.spi
        return table.get(str(local), str(local))


def target_address(url: str, board: str | None, broker: str | None,
                   timeout: float) -> tuple[str, int]:
    """Where to connect: the board's address as the MQTT broker has it now when
    ``board`` is set (asked again at every connect, so a board that came back on
    another address is found), else ``url``."""
    if board:
        from ..mqtt.discovery import resolve_sync  # here: it needs the optional aiomqtt

        return resolve_sync(board, broker, timeout=timeout)
    return server_address(url)


#: What the drop-in layers call: a bus-call API over one connection.
AnyClient = Client | BlockingClient


class DropinSession:
    """A client plus the bus map, reconnected after ``fork``.

    Its own client is a :class:`~bridge.client.BlockingClient`: drivers make one
    bus call at a time, and doing the I/O on the caller's thread spares each call
    two thread hand-overs (docs/performance.md).
    """

    def __init__(self, url: str, bus_map: BusMap | None = None, *, timeout: float = 5.0,
                 client: AnyClient | None = None, board: str | None = None,
                 broker: str | None = None) -> None:
        self.url = url or (f"board {board}" if board else "")
        #: Found through the MQTT broker at every (re)connect when set.
        self.board = board
        self.broker = broker
        self.map = bus_map or BusMap()
        self.timeout = timeout
        self._client = client
        self._owned = client is None  # a caller's client is never closed or replaced
        self._pid = os.getpid() if client is not None else 0
        self._lock = threading.Lock()

    @property
    def client(self) -> AnyClient:
        with self._lock:
            if not self._owned:
                assert self._client is not None
                return self._client
            if self._client is not None and self._pid == os.getpid() and self._lost():
                # Requests in flight when it dropped failed with ConnectionLost and are
                # not re-sent; new requests get a new connection (a restarted board).
                self._client.close()
                self._client = None
            if self._client is None or self._pid != os.getpid():
                # A forked child must not share its parent's socket: open its own.
                try:
                    host, port = target_address(self.url, self.board, self.broker,
                                                self.timeout)
                    self._client = BlockingClient(host, port, timeout=self.timeout,
                                                  name="busbridge-dropin",
                                                  leases=env_leases(),
                                                  auth=ClientAuth.from_env())
                except ImportError:
                    raise OSError(errno.ENODEV, f"busbridge: {env.BOARD} needs the MQTT "
                                  "client: pip install 'busbridge[mqtt]'") from None
                except RemoteError as e:  # unauthorized, too many clients: not a driver bug
                    err = errno.EACCES if e.code == "unauthorized" else errno.EAGAIN
                    raise OSError(err, f"the busbridge server at {self.url} refused the "
                                  f"connection: {e}") from e
                except OSError as e:
                    raise OSError(e.errno or errno.ECONNREFUSED,
                                  f"cannot reach the busbridge server at {self.url}: "
                                  f"{e.strerror or e}") from e
                self._pid = os.getpid()
            return self._client

    def _lost(self) -> bool:
        assert self._client is not None
        return not self._client.connected

    @property
    def welcome(self) -> WelcomeInfo:
        return self.client.welcome

    def resolve(self, kind: Kind, local: int | str, path: str) -> str:
        """The remote bus for a local one; a missing bus fails as opening its device node would."""
        name = self.map.remote(kind, local)
        info = self.welcome.i2c_bus(name) if kind == "i2c" else self.welcome.spi_bus(name)
        if info is None:
            have = [b.name for b in (self.welcome.i2c if kind == "i2c" else self.welcome.spi)]
            raise FileNotFoundError(
                errno.ENOENT,
                f"No such file or directory (busbridge: remote {kind} bus {name!r} does not "
                f"exist on {self.url}; it has {have}; map buses with --map/{env.MAP})",
                path,
            )
        return name

    def close(self) -> None:
        with self._lock:
            if not self._owned:
                return
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None


_session: DropinSession | None = None
_session_lock = threading.Lock()


def connect(url: str | None = None, bus_map: BusMap | Iterable[str] | None = None, *,
            timeout: float | None = None, client: AnyClient | None = None,
            board: str | None = None, broker: str | None = None) -> DropinSession:
    """Point every drop-in object created afterwards at ``url``, ``board`` or ``client``."""
    global _session
    if bus_map is not None and not isinstance(bus_map, BusMap):
        bus_map = BusMap.parse(bus_map)
    env_url = os.environ.get(env.URL, "")
    if not url and not board and not env_url:
        board = os.environ.get(env.BOARD) or None
    s = DropinSession("" if board else url or env_url or "127.0.0.1:7707", bus_map,
                timeout=timeout if timeout is not None else _env_timeout(), client=client,
                board=board, broker=broker or os.environ.get(env.BROKER) or None)
    with _session_lock:
        old, _session = _session, s
    if old is not None and old is not s:
        old.close()
    return s


def _env_timeout() -> float:
    raw = os.environ.get(env.TIMEOUT, "")
    try:
        return float(raw) if raw else 5.0
    except ValueError:
        raise ValueError(f"{env.TIMEOUT}={raw!r} is not a number of seconds") from None


def session() -> DropinSession:
    """The process's session, configured from the environment on first use."""
    global _session
    with _session_lock:
        if _session is None:
            url = os.environ.get(env.URL, "")
            board = os.environ.get(env.BOARD, "") if not url else ""
            if not url and not board:
                raise OSError(errno.ENODEV, f"busbridge: no server configured: set "
                              f"{env.URL}=HOST:PORT (or {env.BOARD}=NAME) or call "
                              "bridge.dropin.connect()")
            _session = DropinSession(url, BusMap.parse([os.environ.get(env.MAP, "")]),
                               timeout=_env_timeout(), board=board or None,
                               broker=os.environ.get(env.BROKER) or None)
        return _session


def disconnect() -> None:
    """Close the shared connection (the next drop-in object reconnects)."""
    global _session
    with _session_lock:
        s, _session = _session, None
    if s is not None:
        s.close()


#: ERROR codes as the errno a kernel driver would have seen; others are EINVAL.
#: EBUSY is also what i2c-dev says for an address a kernel driver holds.
_REMOTE_ERRNO = {ErrorCode.TIMEOUT: errno.ETIMEDOUT, ErrorCode.UNKNOWN_BUS: errno.ENOENT,
                 ErrorCode.BUSY: errno.EBUSY, ErrorCode.DENIED: errno.EACCES,
                 ErrorCode.RATE_LIMITED: errno.EAGAIN}


def call(fn: Callable[[], T]) -> T:
    """Run a client call; bus and server refusals become plain ``OSError`` with an errno.

    Drivers written for the kernel catch ``OSError`` only (adafruit_bus_device's
    probe, Blinka's scan); anything else escaping would break them.
    """
    try:
        return fn()
    except TransferError as e:
        err = e.errno or errno.EIO
        raise OSError(err, f"{os.strerror(err)} ({e.strerror})") from e
    except RemoteError as e:
        err = _REMOTE_ERRNO.get(e.code, errno.EINVAL)
        raise OSError(err, f"{os.strerror(err)} (busbridge server: {e})") from e
    except ConnectionLost:
        raise
    except ValueError as e:  # refused locally before sending (over a limit)
        raise OSError(errno.EINVAL, f"{os.strerror(errno.EINVAL)} ({e})") from e
