"""``busbridge vhost-user``: a QEMU guest's virtio-i2c / virtio-spi device on a remote bus."""

from __future__ import annotations

import click

from protocol.limits import DEFAULT_PORT

from .common import pick_target, resolve_board


@click.command("vhost-user", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", required=True, metavar="PATH",
              help="Unix socket QEMU connects to (-chardev socket,path=PATH).")
@click.option("--connect", "connect", default=None, metavar="HOST:PORT",
              help=f"The busbridge server of the board [default: 127.0.0.1:{DEFAULT_PORT}].")
@click.option("--board", metavar="NAME", envvar="BUSBRIDGE_BOARD", default=None,
              help="The board, found by name through the MQTT broker (instead of --connect).")
@click.option("--broker", metavar="[mqtt[s]://]HOST[:PORT]", envvar="BUSBRIDGE_BROKER",
              default=None, help="MQTT broker for --board; default localhost:1883.")
@click.option("--bus", required=True, metavar="NAME", help="Bus name on the board.")
@click.option("--device", "kind", type=click.Choice(["i2c", "spi"]), default="i2c",
              show_default=True, help="virtio-i2c (vhost-user-i2c-pci) or virtio-spi "
                                      "(vhost-user-spi-pci).")
@click.option("--timeout", type=click.FloatRange(0.01, 3600), default=5.0, show_default=True,
              metavar="S", help="Per-request deadline; a request past it completes with an "
                                "error in the guest.")
@click.option("-v", "--verbose", count=True, help="-v: connections; -vv: every message.")
@click.pass_context
def vhost_user(ctx: click.Context, socket_path: str, connect: str | None, board: str | None,
               broker: str | None, bus: str, kind: str, timeout: float, verbose: int) -> None:
    """Serve one virtio device to QEMU over vhost-user, backed by a board's bus.

    \b
    Start this first, then QEMU with shared guest memory:
      busbridge vhost-user --socket /tmp/vi2c.sock --connect board:7707 --bus 1
      qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=256M,share=on \\
        -machine q35,memory-backend=mem -chardev socket,id=vi2c,path=/tmp/vi2c.sock \\
        -device vhost-user-i2c-pci,chardev=vi2c
    """
    from ..client import parse_address
    from ..client.auth import ClientAuth
    from ..logs import setup
    from ..runtime import run
    from ..vhost.agent import AgentError, run_agent

    # TLS / token: busbridge's --tls-* / --token-file options, else BUSBRIDGE_TLS* / _TOKEN*.
    auth = getattr(ctx.obj, "auth", None) or ClientAuth.from_env()

    setup(verbose)
    board = pick_target(click.get_current_context(), "connect", board)
    if board:
        connect = resolve_board(board, broker, timeout)
    try:
        host, port = parse_address(connect or f"127.0.0.1:{DEFAULT_PORT}")
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--connect") from None
    try:
        run(run_agent(socket_path, host, port, bus, kind, timeout=timeout, auth=auth))
    except AgentError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{socket_path}: {e}") from None
