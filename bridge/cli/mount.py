"""``busbridge mount``: the remote buses as real /dev/i2c-N and /dev/spidevB.C (CUSE)."""

from __future__ import annotations

import os
import signal
import threading

import click

from .. import logs
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

EPILOG = """\b
Examples:
  busbridge mount --connect lab-pi:7707                 # every numbered remote bus
  busbridge mount --connect lab-pi:7707 --map i2c:1=1 --map spi:0=0
  docker run --device /dev/i2c-1 image i2cdetect -y 1   # while the mount runs
"""


@click.command("mount", context_settings={"help_option_names": ["-h", "--help"]},
               epilog=EPILOG)
@click.option("--map", "maps", metavar="i2c:LOCAL=REMOTE|spi:LOCAL=REMOTE", multiple=True,
              help="Create /dev/i2c-LOCAL (or /dev/spidevLOCAL.CS for each chip select) for "
                   "the remote bus; repeatable. Default: every remote bus named by a number.")
@connection_options
@click.pass_context
def mount(ctx: click.Context, maps: tuple[str, ...]) -> int:
    """Create character devices backed by the remote buses, through CUSE, until stopped.

    For programs LD_PRELOAD cannot reach (static, setuid, Go) and for containers.
    Needs /dev/cuse (modprobe cuse) and the rights to open it (root); see docs/native.md.
    """
    from ..native.agent import Agent
    from ..native.cuse import start
    from ..native.link import ClientPool

    opts = options(ctx)
    url = resolve_board(opts.board, opts.broker, opts.timeout) if opts.board else opts.address
    env = dict(os.environ)
    env.update(opts.auth.env())
    env[ENV_URL] = url
    env[ENV_TIMEOUT] = f"{opts.timeout:g}"
    try:
        bus_map = BusMap.parse(maps)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--map") from None
    env[ENV_MAP] = bus_map.format()
    if not os.path.exists("/dev/cuse"):
        raise CliError("/dev/cuse does not exist: load the kernel's CUSE module "
                       "(modprobe cuse) or use `busbridge run` (LD_PRELOAD)")
    agent = Agent(ClientPool(env, name="busbridge-mount"), bus_map)
    try:
        welcome = agent.link.welcome()
    except OSError as e:
        raise ConnectError(connect_failure(f"the busbridge server at {url}", url, e)) from None
    wanted: list[tuple[str, int, int]] = []
    if maps:
        wanted += [("i2c", int(k), 0) for k in bus_map.i2c if k.isdigit()]
        for k, remote in bus_map.spi.items():
            info = welcome.spi_bus(remote)
            if k.isdigit() and info is not None:
                wanted += [("spi", int(k), cs) for cs in range(info.config.cs_max_number)]
    else:
        wanted += [("i2c", int(b.name), 0) for b in welcome.i2c if b.name.isdigit()]
        wanted += [("spi", int(b.name), cs) for b in welcome.spi if b.name.isdigit()
                   for cs in range(b.config.cs_max_number)]
    if not wanted:
        raise CliError("no bus to mount: give --map i2c:LOCAL=REMOTE")
    devices = []
    for kind, local, cs in wanted:
        try:
            devices.append(start(agent, kind, local, cs))
        except OSError as e:
            what = f"/dev/i2c-{local}" if kind == "i2c" else f"/dev/spidev{local}.{cs}"
            raise CliError(f"{what}: {e.strerror or e}") from None
    for d in devices:
        if not d.ready.wait(10):
            raise CliError(f"/dev/{d.name}: the kernel did not finish CUSE_INIT")
        logs.say(f"/dev/{d.name} -> {url}", who="busbridge mount", device=f"/dev/{d.name}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0
