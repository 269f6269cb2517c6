"""A simulated board for a test, and its controller: ``bridge.testing`` (a pytest plugin).

Installed with busbridge, this module is a pytest plugin (entry point
``pytest11``), so any project's tests get the ``busbridge_board`` fixture::

    def test_the_driver_reads_what_the_chip_measures(busbridge_board):
        busbridge_board.sim.set(1, 0x48, temperature=31.25)
        bus = smbus2.SMBus(1)                # busbridge's drop-in, pointed at the board
        ...

The fixture serves the packaged simulated board (or the board file of a
``@pytest.mark.busbridge_board("boards/mine.toml")`` marker, a path relative to
the test file's directory) on 127.0.0.1 on a
port of its own, in this process on a thread of its own, so a synchronous
driver can block on it; points busbridge's drop-in modules (``smbus2``,
``smbus``, ``spidev``, ``board``/``busio``) at it for the test; and hands the
test :class:`TestBoard`: ``sim`` (the admin channel's :class:`SimControl`),
``url``, ``client()`` and the ``board`` itself.  Outside pytest,
``with TestBoard.serve() as tb:`` does the same.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .client import Client, SimControl
from .config import Board, load_board
from .dropin.session import connect as connect_dropins
from .dropin.session import disconnect as disconnect_dropins
from .runtime import new_event_loop
from .server import Server

#: Seconds the server may take to start or to stop.
START_TIMEOUT_S = 30.0


class TestBoard:
    """A board served on a thread of this process, and a controller for its chips."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, board: Board, server: Server, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:
        self.board = board
        self.server = server
        self._loop = loop
        self._thread = thread
        self._control: Client | None = None

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """``127.0.0.1:PORT``: for ``BUSBRIDGE_URL``, ``busbridge run --connect``, a client."""
        return f"{self.host}:{self.port}"

    @property
    def sim(self) -> SimControl:
        """Test control of the board's simulated chips: ``set``, ``get``, ``fault``, ``log``,
        ``screenshot``, ``devices`` (over one connection kept for the test)."""
        if self._control is None:
            self._control = Client(self.host, self.port, name="busbridge test control")
        return self._control.sim

    def client(self, **kw: Any) -> Client:
        """A new synchronous client of the board (close it, or use it in ``with``)."""
        return Client(self.host, self.port, **kw)

    @classmethod
    @contextmanager
    def serve(cls, board: Board | str | os.PathLike[str] | None = None) -> Iterator[TestBoard]:
        """Serve ``board`` (a Board, a board file, or None: the packaged simulated board)
        until the block ends."""
        b = board if isinstance(board, Board) else load_board(board)
        server, loop, t = _start_server_thread(b, "busbridge-test-board")
        tb = cls(b, server, loop, t)
        try:
            yield tb
        finally:
            tb._close()

    def _close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        fut = asyncio.run_coroutine_threadsafe(self.server.close(grace=2.0), self._loop)
        fut.result(START_TIMEOUT_S)
        self._thread.join(START_TIMEOUT_S)


def _start_server_thread(
    board: Board, thread_name: str, **server_options: Any,
) -> tuple[Server, asyncio.AbstractEventLoop, threading.Thread]:
    """``Server(board, host="127.0.0.1", port=0, **server_options)`` started on a new loop
    on a daemon thread of its own (so a synchronous driver in this thread can block on it):
    the server, its loop and the thread.  A server that cannot start raises its error here.

    busbridge's own tests serve their boards through this too (with server options).
    """
    loop = new_event_loop()
    ready = threading.Event()
    failed: list[BaseException] = []
    holder: list[Server] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            server = Server(board, host="127.0.0.1", port=0, **server_options)
            try:
                await server.start()
            except BaseException as e:
                failed.append(e)
                ready.set()
                return
            holder.append(server)
            ready.set()
            await server.serve_forever()

        loop.run_until_complete(main())

    t = threading.Thread(target=run, name=thread_name, daemon=True)
    t.start()
    if not ready.wait(START_TIMEOUT_S):
        raise TimeoutError(f"the test board did not start in {START_TIMEOUT_S:g} s")
    if failed:
        raise failed[0]
    return holder[0], loop, t


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "busbridge_board(path): the board file the "
                            "busbridge_board fixture serves (default: the packaged "
                            "simulated board)")


@pytest.fixture
def busbridge_board(request: pytest.FixtureRequest) -> Iterator[TestBoard]:
    """The simulated board, served for this test; busbridge's drop-ins point at it."""
    mark = request.node.get_closest_marker("busbridge_board")
    path = mark.args[0] if mark is not None and mark.args else None
    if isinstance(path, str | os.PathLike):
        # Relative to the test file, as a fixture's data files are: the same board
        # whatever directory pytest runs from.
        path = request.path.parent / path
    with TestBoard.serve(path) as tb:
        connect_dropins(tb.url)
        try:
            yield tb
        finally:
            disconnect_dropins()
