"""The bridge under test: ``python -m bridge.bench.bridge_server uv|asyncio``.

Serves the bench board (:func:`~bridge.bench.workload.bench_board_text`) on an
ephemeral port, prints the port, then serves until its stdin closes (a clean
exit, for callgrind) or it is terminated.
"""

from __future__ import annotations

import sys

from ..config import board_from_toml_text
from ..runtime import run
from ..server import Server
from .echo_server import until_stdin_closes
from .workload import bench_board_text


async def serve() -> None:
    board = board_from_toml_text(bench_board_text(), "<bench>")
    s = Server(board, host="127.0.0.1", port=0, request_timeout=5.0)
    await s.start()
    print(s.port, flush=True)
    await until_stdin_closes()
    await s.close(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    (loop,) = sys.argv[1:2] if argv is None else argv
    run(serve(), use_uvloop=loop == "uv")


if __name__ == "__main__":
    main()
