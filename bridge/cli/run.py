"""``busbridge run``: run an unchanged program against a remote board's buses."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import click

from ..client import Client, RemoteError, parse_address
from ..client.auth import ClientAuth
from ..dropin.session import BusMap
from ..env import MAP as ENV_MAP
from ..env import TIMEOUT as ENV_TIMEOUT
from ..env import URL as ENV_URL
from .common import (
    CliError,
    ConnectError,
    connect_failure,
    connection_options,
    options,
    resolve_board,
)
from .lease import default_holder, hold_and_run

SHIM_DIR = Path(__file__).resolve().parent.parent / "dropin" / "shim"

EPILOG = """\b
Examples:
  busbridge run --connect lab-pi:7707 -- python read_sensor.py
  busbridge run --map i2c:1=2 --map spi:0=0 -- pytest tests/hw
  BUSBRIDGE_URL=lab-pi:7707 BUSBRIDGE_MAP=i2c:1=2 busbridge run -- pytest
  busbridge run --lease i2c:1 --lease-wait 600 -- pytest tests/hw   # hold bus 1 for the job
  busbridge run --board lab-pi-3 --broker mqtt.lab:1883 -- pytest tests/hw
"""


def child_env(url: str, bus_map: BusMap, timeout: float,
              base: dict[str, str] | None = None,
              auth: ClientAuth | None = None) -> dict[str, str]:
    """The environment that makes ``smbus2``/``spidev``/``board``/``busio`` resolve to us."""
    env = dict(os.environ if base is None else base)
    # Only the shim: the program's Python must have busbridge installed (the shim
    # imports bridge), and adding a site-packages here would shadow its stdlib.
    paths = [str(SHIM_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env[ENV_URL] = url
    env[ENV_MAP] = bus_map.format()
    env[ENV_TIMEOUT] = f"{timeout:g}"
    if auth is not None:  # TLS/token options given as busbridge flags reach the drop-ins
        env.update(auth.env())
    return env


def _check(url: str, bus_map: BusMap, timeout: float, auth: ClientAuth) -> None:
    """Fail before starting the program if the server or a mapped bus is missing."""
    try:
        host, port = parse_address(url)
        with Client(host, port, timeout=timeout, name="busbridge-run", auth=auth) as c:
            w = c.welcome
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--connect") from None
    except RemoteError as e:
        raise CliError(f"the busbridge server at {url} refused the connection: "
                       f"{e.message}") from None
    except OSError as e:
        raise ConnectError(connect_failure(f"the busbridge server at {url}", url, e)) from None
    for kind, table, have in (("i2c", bus_map.i2c, [b.name for b in w.i2c]),
                              ("spi", bus_map.spi, [b.name for b in w.spi])):
        for local, remote in table.items():
            if remote not in have:
                raise CliError(
                    f"--map {kind}:{local}={remote}: the server at {url} has no {kind} bus "
                    f"{remote!r} (its {kind} buses: {', '.join(have) or 'none'})")


# Options end at COMMAND's first word: `busbridge run pytest --timeout 30` passes --timeout
# to pytest, not to busbridge.
@click.command("run", context_settings={"help_option_names": ["-h", "--help"],
                                        "ignore_unknown_options": True,
                                        "allow_interspersed_args": False}, epilog=EPILOG)
@click.option("--map", "maps", metavar="[i2c:|spi:]LOCAL=REMOTE", multiple=True,
              envvar=ENV_MAP, help="Local bus number to remote bus name; repeatable "
              "(also cs:PIN=BUS.CS for a GPIO chip select). Default: same name.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Connect once first, so a wrong address or bus fails before the program.")
@click.option("--lease", "leases", metavar="i2c:BUS[@ADDR]|spi:BUS[@CS]", multiple=True,
              help="Hold this lease while COMMAND runs (renewed at TTL/3, released at exit; "
              "COMMAND's connections use it through $BUSBRIDGE_LEASE). Repeatable.")
@click.option("--lease-ttl", type=click.IntRange(1, 86400), default=60, show_default=True,
              metavar="SECONDS", help="TTL of --lease leases: how long they outlive a "
              "killed busbridge run.")
@click.option("--lease-wait", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="If a --lease scope is busy, wait this long for it (default: fail at once).")
@click.option("--holder", default=None, metavar="TEXT",
              help="Holder name shown to others in busy errors (default: $BUSBRIDGE_HOLDER, "
              "else user@host, pid and command).")
@click.option("--native/--no-native", default=True, show_default=True,
              help="Also give native programs (C, Rust, Node, i2c-tools) the remote "
              "/dev/i2c-N and /dev/spidevB.C through an LD_PRELOAD library (docs/native.md).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@connection_options
@click.pass_context
def run(ctx: click.Context, maps: tuple[str, ...], check: bool, leases: tuple[str, ...],
        lease_ttl: int, lease_wait: float, holder: str | None, native: bool,
        command: tuple[str, ...]) -> int | None:
    """Run COMMAND with smbus2, spidev, Blinka's board/busio and /dev/i2c-N, /dev/spidevB.C
    on the remote buses.

    Inside COMMAND, `import smbus2`, `import spidev`, `import board`, `busio`
    and `digitalio` load busbridge's drop-in modules (a directory put first
    on PYTHONPATH), so SMBus(1) and SpiDev(0, 0) talk to the server's buses;
    native programs (i2cget, C, Rust, Node) opening /dev/i2c-N or
    /dev/spidevB.C get the remote devices through an LD_PRELOAD library.
    With --board, the name is resolved once, here, and COMMAND gets the address.
    """
    opts = options(ctx)
    timeout, auth = opts.timeout, opts.auth
    url = resolve_board(opts.board, opts.broker, timeout) if opts.board else opts.address
    try:
        bus_map = BusMap.parse(maps)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--map") from None
    if check:
        _check(url, bus_map, timeout, auth)
    env = child_env(url, bus_map, timeout, auth=auth)
    program = shutil.which(command[0], path=env.get("PATH"))
    if program is None:
        raise CliError(f"{command[0]}: command not found")
    from ..native.launch import prepare, serve_and_run

    library = prepare(program, native)
    if leases:
        host, port = parse_address(url)
        lease_opts = dataclasses.replace(opts, url=url, host=host, port=port, board=None)
        holder = holder or default_holder(command)  # the user's command, not the wrapper
        if library is not None:  # the agent starts once the leases' tokens are in env
            program, command = sys.executable, (sys.executable, "-m", "bridge.native.launch",
                                                program, *command)
        return hold_and_run(lease_opts, leases, lease_ttl, lease_wait, holder, program,
                            command, env)
    if library is not None:
        return serve_and_run(program, command, env, library)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(program, list(command), env)
