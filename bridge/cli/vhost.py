"""``busbridge vhost-user``: a QEMU guest's virtio-i2c / virtio-spi device on a remote bus."""

from __future__ import annotations

import asyncio

import click

from .. import logs
from .common import CliError, connection_options, options, resolve_board, verbosity


@click.command("vhost-user", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", required=True, metavar="PATH",
              help="Unix socket QEMU connects to (-chardev socket,path=PATH).")
@click.option("--bus", required=True, metavar="NAME", help="Bus name on the board.")
@click.option("--device", "kind", type=click.Choice(["i2c", "spi"]), default="i2c",
              show_default=True, help="virtio-i2c (vhost-user-i2c-pci) or virtio-spi "
                                      "(vhost-user-spi-pci).")
@click.option("-v", "--verbose", count=True, help="-v: connections; -vv: every message.")
@connection_options
@click.pass_context
def vhost_user(ctx: click.Context, socket_path: str, bus: str, kind: str,
               verbose: int) -> None:
    """Serve one virtio device to QEMU over vhost-user, backed by a board's bus.

    \b
    Start this first, then QEMU with shared guest memory:
      busbridge vhost-user --socket /tmp/vi2c.sock --connect board:7707 --bus 1
      qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=256M,share=on \\
        -machine q35,memory-backend=mem -chardev socket,id=vi2c,path=/tmp/vi2c.sock \\
        -device vhost-user-i2c-pci,chardev=vi2c

    --timeout is each request's deadline: a request past it completes with an
    error in the guest.
    """
    from ..client import parse_address
    from ..runtime import run
    from ..vhost.agent import AgentError, run_agent

    opts = options(ctx)
    logs.setup(max(verbose, verbosity(ctx)), json_format=logs.json_mode())
    host, port = opts.host, opts.port
    if opts.board:
        host, port = parse_address(resolve_board(opts.board, opts.broker, opts.timeout))
    where = f"{opts.url} at {host}:{port}" if opts.board else opts.address
    qemu = "vhost-user-i2c-pci" if kind == "i2c" else "vhost-user-spi-pci"

    async def main() -> None:
        ready = asyncio.Event()

        async def started() -> None:
            await ready.wait()
            logs.say(f"vhost-user: virtio-{kind} for {kind} bus {bus} of {where}, on "
                     f"{socket_path}; start QEMU with -chardev socket,path={socket_path} "
                     f"-device {qemu}", socket=socket_path, bus=bus, server=where)

        announce = asyncio.create_task(started())
        try:
            await run_agent(socket_path, host, port, bus, kind, timeout=opts.timeout,
                            ready=ready, auth=opts.auth)
        finally:
            announce.cancel()

    try:
        run(main())
    except AgentError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{socket_path}: {e}") from None
