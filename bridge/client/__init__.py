"""The client wing: everything a guest side needs to use a remote board's buses.

:class:`AsyncClient` is the pipelined asyncio client, :class:`Client` a
thread-backed synchronous wrapper around it, and :class:`BlockingClient` a
synchronous client that does its I/O on the caller's thread (what the drop-in
layers use). Nothing here imports the board side.

Errors: everything the clients raise is a :class:`BusBridgeError` —
:class:`TransferError` (also ``OSError``: the bus failed, with the board's errno),
:class:`RemoteError` (the server refused a frame), :class:`ConnectionLost` (also
``ConnectionError``), :class:`RequestTimeout` and :class:`ConnectTimeout` (also
``TimeoutError``), :class:`InvalidRequest` (also ``ValueError``: refused before
sending).  Only what the operating system raises while connecting (refused,
unreachable, ``ssl.SSLError``) passes through as it is; see
:mod:`bridge.client.errors`.  Nothing is ever re-sent.

Modules: ``errors`` (what is raised), ``requests`` (frames and answers, shared by
all three clients), ``auth`` (TLS and token settings), ``pipeline`` (the asyncio
connection) under ``aio`` (:class:`AsyncClient`) under ``threaded`` (:class:`Client`);
``sync`` (what the synchronous clients share) under ``threaded`` and ``blocking``
(:class:`BlockingClient`, which needs no event loop).
"""

from protocol.virtio import chain

from .aio import AsyncClient
from .auth import ClientAuth
from .blocking import BlockingClient
from .errors import (
    BusBridgeError,
    ConnectionLost,
    ConnectTimeout,
    InvalidRequest,
    RemoteError,
    RequestTimeout,
    TransferError,
)
from .requests import Lease, parse_address, read, spi_xfer, write
from .threaded import Client

__all__ = [
    "AsyncClient",
    "BlockingClient",
    "BusBridgeError",
    "Client",
    "ClientAuth",
    "ConnectTimeout",
    "ConnectionLost",
    "InvalidRequest",
    "Lease",
    "RemoteError",
    "RequestTimeout",
    "TransferError",
    "chain",
    "parse_address",
    "read",
    "spi_xfer",
    "write",
]
