"""What every client shares about a request: building its frame, and reading its answer.

The asyncio, thread-backed and blocking clients differ only in how bytes move;
the request ids, the deadline sent to the server, the local refusals, the SPI
transfer builder and the reading of an answer (which status byte failed, with
which errno) are here once, so the three agree.
"""

from __future__ import annotations

import dataclasses
import errno as _errno
import math
from collections.abc import Sequence
from typing import TypedDict

import pydantic

from protocol import virtio
from protocol.connection import Connection, LocalProtocolError
from protocol.events import Error, Event, Result, SpiRequest
from protocol.fastpath import ClientConnection
from protocol.handshake import HelloInfo
from protocol.leases import LeaseInfo
from protocol.limits import DEFAULT_PORT
from protocol.virtio import I2CMsg, I2CStatus, SpiResult, SpiTransfer, SpiTransferHead

from .. import addresses
from .errors import InvalidRequest, RemoteError, TransferError

__all__ = [
    "Lease",
    "SpiHead",
    "answer_wait",
    "check_answer",
    "check_timeout",
    "encode",
    "hello_info",
    "i2c_frame",
    "parse_address",
    "raise_for_i2c",
    "raise_for_spi",
    "read",
    "server_address",
    "spi_frame",
    "spi_xfer",
    "write",
]


@dataclasses.dataclass(frozen=True)
class Lease:
    """A lease this client took: ``token`` is the secret to present (never log it)."""

    token: str = dataclasses.field(repr=False)
    info: LeaseInfo

    @property
    def id(self) -> str:
        return self.info.id


class SpiHead(TypedDict, total=False):
    """The per-transfer fields of :func:`spi_xfer`, for ``xfer(..., **head)``."""

    speed_hz: int
    mode: int
    bits_per_word: int
    cs_change: bool
    tx_nbits: int
    rx_nbits: int
    word_delay_ns: int
    cs_setup_ns: int
    cs_hold_ns: int
    cs_inactive_ns: int


def read(addr: int, length: int, *, ten_bit: bool = False) -> I2CMsg:
    """A read of ``length`` bytes from ``addr`` (:func:`protocol.virtio.read`); a
    negative length is an :class:`InvalidRequest`, not a frame the server refuses."""
    if type(length) is not int or length < 0:
        raise InvalidRequest(f"read length must be an integer >= 0, not {length!r}")
    return virtio.read(addr, length, ten_bit=ten_bit)


def write(addr: int, data: bytes | bytearray | Sequence[int] = b"", *,
          ten_bit: bool = False) -> I2CMsg:
    """A write of ``data`` to ``addr`` (:func:`protocol.virtio.write`); data that is not
    bytes (a value above 255, say) is an :class:`InvalidRequest`."""
    try:
        return virtio.write(addr, data, ten_bit=ten_bit)
    except (TypeError, ValueError) as e:
        raise InvalidRequest(f"write data for address {addr:#x}: {e}") from None


def hello_info(name: str, token: str | None, leases: Sequence[str]) -> HelloInfo:
    """The HELLO a client sends; a name, token or lease the protocol refuses is an
    :class:`InvalidRequest` raised before anything is sent."""
    try:
        return HelloInfo(client=name, token=token, leases=list(leases))
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                             for err in e.errors(include_url=False))
        raise InvalidRequest(f"cannot introduce this client: {problems}") from None


def check_timeout(timeout: float) -> float:
    """A client's timeout must be a finite, positive number of seconds (``inf`` reached
    the socket layer as an OverflowError)."""
    if not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise InvalidRequest(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
    return timeout


def spi_xfer(
    tx: bytes | bytearray | Sequence[int] | None = None,
    rx_len: int | None = None,
    *,
    speed_hz: int = 0,
    mode: int = 0,
    bits_per_word: int = 8,
    cs_change: bool = False,
    tx_nbits: int = 0,
    rx_nbits: int = 0,
    word_delay_ns: int = 0,
    cs_setup_ns: int = 0,
    cs_hold_ns: int = 0,
    cs_inactive_ns: int = 0,
) -> SpiTransfer:
    """One SPI transfer.  ``tx`` only: write; ``rx_len`` only: read; ``tx`` with
    ``rx_len=None``: full duplex of ``len(tx)`` bytes.  The chip select is
    filled in by :meth:`AsyncClient.spi`."""
    try:
        data = None if tx is None else bytes(tx)
    except (TypeError, ValueError) as e:
        raise InvalidRequest(f"SPI tx data: {e}") from None
    if rx_len is None:
        rx_len = len(data) if data is not None else 0
    head = SpiTransferHead(
        chip_select_id=0,
        bits_per_word=bits_per_word,
        cs_change=int(cs_change),
        tx_nbits=tx_nbits if data is not None else 0,
        rx_nbits=rx_nbits if rx_len else 0,
        mode=mode,
        freq=speed_hz,
        word_delay_ns=word_delay_ns,
        cs_setup_ns=cs_setup_ns,
        cs_delay_hold_ns=cs_hold_ns,
        cs_change_delay_inactive_ns=cs_inactive_ns,
    )
    return SpiTransfer(head, data, rx_len)


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]``, ``[v6]:PORT`` or ``tcp://HOST:PORT`` → ``(host, port)``
    (:func:`bridge.addresses.parse_address`); a malformed one is an :class:`InvalidRequest`."""
    try:
        return addresses.parse_address(text, default_port)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None


def server_address(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST[:PORT]`` / ``tcp://HOST:PORT`` (port 7707 by default);
    a malformed one raises :class:`InvalidRequest`."""
    try:
        return parse_address(url)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None


# ---------------------------------------------------------------------------
# Frames out
# ---------------------------------------------------------------------------


def i2c_frame(conn: ClientConnection, bus: str | int, msgs: Sequence[I2CMsg],
               timeout: float | None, chained: bool) -> tuple[int, bytes]:
    """A fresh request id and the I2C frame; limits broken locally raise :class:`InvalidRequest`.

    ``timeout`` (s) goes to the server as the request's deadline.  Shared by both
    clients, so they agree on ids, deadlines and local refusals.
    """
    rid = conn.next_id()
    try:
        return rid, conn.send_i2c(rid, bus if type(bus) is str else str(bus), msgs,
                                  _server_ms(timeout), chained)
    except LocalProtocolError as e:
        raise InvalidRequest(str(e)) from None


def spi_frame(conn: Connection, bus: str | int, cs: int, transfers: Sequence[SpiTransfer],
               timeout: float | None) -> tuple[int, bytes]:
    """Like :func:`i2c_frame`; every head's chip_select_id is set to ``cs``."""
    ts = tuple(
        t if t.head.chip_select_id == cs
        else dataclasses.replace(t, head=dataclasses.replace(t.head, chip_select_id=cs))
        for t in transfers
    )
    ev = SpiRequest(conn.next_id(), bus if type(bus) is str else str(bus), cs, ts,
                    _server_ms(timeout))
    return ev.id, encode(conn, ev)


def encode(conn: Connection, ev: Event) -> bytes:
    """The frame of any other event (HELLO, PING, a lease request); what the protocol
    refuses to send raises :class:`InvalidRequest`."""
    try:
        return conn.send(ev)
    except LocalProtocolError as e:
        raise InvalidRequest(str(e)) from None


def _server_ms(timeout: float | None) -> int | None:
    """A request's own timeout, sent as its deadline; zero or negative is refused here."""
    if timeout is None:
        return None
    check_timeout(timeout)
    # Never a deadline sooner than asked (1.5 ms is 2), but 0.07 s is 70, not 71.
    return max(1, math.ceil(round(timeout * 1000, 6)))


def answer_wait(default: float, timeout: float | None) -> float:
    """How long a client waits: a request's own deadline leaves the server 1 s to
    answer it first (with ERR/ETIMEDOUT) before the client gives up."""
    return default if timeout is None else timeout + 1.0


# ---------------------------------------------------------------------------
# Answers in
# ---------------------------------------------------------------------------


def check_answer(ev: Event) -> Result:
    """The :class:`Result` a bus request was answered with; an ERROR frame raises
    :class:`RemoteError` (bus errors inside a Result do not raise here)."""
    if isinstance(ev, Error):
        raise RemoteError(ev.code, ev.message)
    assert isinstance(ev, Result)
    return ev


def raise_for_i2c(result: Result) -> None:
    """Raise :class:`TransferError` for the first failed message of an I2C answer."""
    if not any(result.status):  # all OK (0)
        return
    k = next(i for i, b in enumerate(result.status) if b != I2CStatus.OK)
    f = next((x for x in result.failures if x.index == k), None)
    if f is None and result.failures:
        f = result.failures[0]
    err = f.errno if f and f.errno else _errno.EIO
    raise TransferError(err, f.message if f else f"message {k} failed", result, k)


def raise_for_spi(result: Result) -> None:
    """Raise :class:`TransferError` for the failed transfer of an SPI answer
    (a PARAM_ERR first: it names the transfer the server refused)."""
    if not any(result.status):  # all TRANS_OK (0)
        return
    k = next(i for i, b in enumerate(result.status) if b == SpiResult.PARAM_ERR) if (
        SpiResult.PARAM_ERR in result.status
    ) else next(i for i, b in enumerate(result.status) if b != SpiResult.TRANS_OK)
    f = next((x for x in result.failures if x.index == k), None) or (
        result.failures[0] if result.failures else None
    )
    default = _errno.EINVAL if result.status[k] == SpiResult.PARAM_ERR else _errno.EIO
    err = f.errno if f and f.errno else default
    raise TransferError(err, f.message if f else f"transfer {k} failed", result, k)
