"""The client wing: everything a guest side needs to use a remote board's buses.

:class:`AsyncClient` is the pipelined asyncio client, :class:`Client` a
thread-backed synchronous wrapper around it, and :class:`BlockingClient` a
synchronous client that does its I/O on the caller's thread (what the drop-in
layers use). Nothing here imports the board side.

Modules: ``errors`` (what is raised), ``requests`` (frames and answers, shared by
all three clients), ``pipeline`` (the asyncio connection), ``aio``, ``sync`` and
``blocking`` (the clients), ``auth`` (TLS and token settings).
"""

from protocol.virtio import chain, read, write

from ..addresses import parse_address
from .aio import AsyncClient
from .auth import ClientAuth
from .blocking import BlockingClient
from .errors import BusBridgeError, ConnectionLost, RemoteError, TransferError
from .requests import Lease, spi_xfer
from .sync import Client

__all__ = [
    "AsyncClient",
    "BlockingClient",
    "BusBridgeError",
    "Client",
    "ClientAuth",
    "ConnectionLost",
    "Lease",
    "RemoteError",
    "TransferError",
    "chain",
    "parse_address",
    "read",
    "spi_xfer",
    "write",
]
