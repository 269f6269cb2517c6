"""``busbridge lease take|renew|release|list`` and the lease holding of ``busbridge run --lease``.

A lease outlives the connection that took it (SPEC.md §8.6), so ``lease
take`` can hand its token to later commands of a CI job through
``$BUSBRIDGE_LEASE``; ``run --lease`` instead holds leases exactly for the
life of one command, renewing them at a third of their TTL.  Tokens go to
stdout or the child's environment only, never to logs or stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import random
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from protocol.errors import ErrorCode
from protocol.leases import MAX_LEASE_TTL, LeaseInfo, describe_scope

from .. import logs
from ..client import AsyncClient, ConnectionLost, Lease, RemoteError
from ..dropin.session import env_leases
from ..env import HOLDER as ENV_HOLDER
from ..env import LEASE as ENV_LEASE
from ..logs import printable, quoted
from ..runtime import run as run_loop
from .common import (
    CONTEXT,
    CliError,
    ConnectError,
    Options,
    connect_failure,
    connection_options,
    errmsg,
    options,
    with_client,
)
from .i2ctools import I2CArgError, parse_i2c_address

#: Longest pause between two attempts while waiting for a busy scope (s).
MAX_BACKOFF = 2.0


@dataclass(frozen=True)
class Scope:
    """What to lease: ``i2c:BUS``, ``i2c:BUS@ADDR``, ``spi:BUS`` or ``spi:BUS@CS``.

    ADDR follows the i2c commands' rule: 7-bit (0x00-0x7f), or 10-bit only in the
    explicit ``@t0x2a5`` form, so an 8-bit address slip is refused, not leased.  The two
    are different scopes: ``i2c:2@t0x050`` is not ``i2c:2@0x50`` (SPEC.md §8.6).
    """

    kind: str
    bus: str
    address: int | None = None
    cs: int | None = None
    ten_bit: bool = False

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, sep, rest = text.strip().partition(":")
        if not sep or kind not in ("i2c", "spi") or not rest:
            raise ValueError(f"bad lease scope {text!r}: expected i2c:BUS[@ADDRESS] or "
                             "spi:BUS[@CS], e.g. i2c:1@0x50")
        bus, at, sub = rest.rpartition("@") if "@" in rest else (rest, "", "")
        if not bus:
            raise ValueError(f"bad lease scope {text!r}: no bus before '@'")
        if not at:
            return cls(kind, bus)
        if kind == "i2c":
            try:
                addr, ten = parse_i2c_address(sub, all_addrs=True,
                                              ten_form=lambda t: f"i2c:{bus}@{t}")
            except I2CArgError as e:
                raise ValueError(f"bad lease scope {text!r}: {e}") from None
            return cls(kind, bus, addr, None, ten)
        try:
            n = int(sub, 0)
        except ValueError:
            raise ValueError(f"bad lease scope {text!r}: {sub!r} is not a number") from None
        return cls(kind, bus, None, n)

    def __str__(self) -> str:
        sub = self.address if self.address is not None else self.cs
        if sub is None:
            return f"{self.kind}:{self.bus}"
        if self.kind == "i2c":
            return f"i2c:{self.bus}@t{sub:#05x}" if self.ten_bit else f"i2c:{self.bus}@{sub:#04x}"
        return f"{self.kind}:{self.bus}@{sub}"


def default_holder(command: Sequence[str] = ()) -> str:
    """Who to name in ``busy`` messages: ``$BUSBRIDGE_HOLDER``, else user@host (and the command)."""
    if os.environ.get(ENV_HOLDER):
        return os.environ[ENV_HOLDER][:256]
    try:
        user = getpass.getuser()
    except Exception:
        user = "?"
    who = f"{user}@{socket.gethostname()}"
    if command:
        who += f" pid {os.getpid()}: {shlex.join(command)}"
    return who[:256]


async def take(client: AsyncClient, scope: Scope, *, ttl: int, holder: str, wait: float,
               on_wait: Callable[[str], None] | None = None) -> Lease:
    """Take ``scope``; while it is busy, retry with jittered backoff for up to ``wait`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    pause = 0.1
    told = False
    while True:
        try:
            return await client.lease_take(scope.bus, scope.address, scope.cs, ttl=ttl,
                                           kind=scope.kind, holder=holder,
                                           ten_bit=scope.ten_bit)
        except RemoteError as e:
            left = deadline - loop.time()
            if e.code is not ErrorCode.BUSY or left <= 0:
                raise
            if on_wait is not None and not told:
                on_wait(e.message)
                told = True
            await asyncio.sleep(min(left, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, MAX_BACKOFF)


def _ttl_option(default: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option("--ttl", type=click.IntRange(1, MAX_LEASE_TTL), default=default,
                        show_default=True, metavar="SECONDS",
                        help="Lease lifetime; the server caps it (default max 3600).")


def _tokens(given: Sequence[str]) -> list[str]:
    try:
        tokens = list(given) or env_leases()
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not tokens:
        raise click.UsageError(f"no lease token: pass one or set {ENV_LEASE}")
    return tokens


def holder_text(info: LeaseInfo) -> str:
    """The holder's own words, quoted and escaped, and who the server says took it:
    ``"ci job 7" (token:ci)``.  Only the part in parentheses is vouched for."""
    who = f" ({printable(info.client)})" if info.client else ""
    return quoted(info.holder) + who


def _describe(info: LeaseInfo) -> str:
    return (f"lease {printable(info.id)} on {printable(info.scope)} held by {holder_text(info)} "
            f"until {printable(info.expires)} ({info.remaining_ms / 1000:.0f} s left)")


@click.group(context_settings=CONTEXT)
def lease() -> None:
    """Exclusive use of a bus, an I2C address or an SPI chip select, for a TTL.

    \b
    busbridge lease take i2c:1@0x50 --ttl 600 --export   eval-able token
    busbridge lease renew                               renew $BUSBRIDGE_LEASE
    busbridge lease release                             give it back
    busbridge lease list                                who holds what
    """


@lease.command("take", context_settings=CONTEXT)
@click.argument("scope", metavar="i2c:BUS[@ADDR]|spi:BUS[@CS]")
@_ttl_option(300)
@click.option("--holder", default=None, metavar="TEXT",
              help=f"Who holds it, shown in busy errors (default: ${ENV_HOLDER} or user@host).")
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="While the scope is busy, retry for this long.")
@click.option("--export", "as_export", is_flag=True,
              help=f"Print `export {ENV_LEASE}=...` (adding to the current value), for eval.")
@click.option("--json", "as_json", is_flag=True, help="Print the lease and token as JSON.")
@connection_options
@click.pass_context
def lease_take(ctx: click.Context, scope: str, ttl: int, holder: str | None, wait: float,
               as_export: bool, as_json: bool) -> None:
    """Take a lease; print its token (stdout) for `renew`, `release` and $BUSBRIDGE_LEASE.

    The lease outlives this command: it ends at its TTL unless renewed, or when released.
    """
    try:
        sc = Scope.parse(scope)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="SCOPE") from None
    who = holder or default_holder()

    def waiting(msg: str) -> None:
        logs.say(f"waiting up to {wait:g} s: {msg}")

    got = with_client(options(ctx), lambda c: take(c, sc, ttl=ttl, holder=who, wait=wait,
                                                  on_wait=waiting))
    if as_json:
        click.echo(json.dumps({"token": got.token, "lease": got.info.to_map()}, indent=2))
    elif as_export:
        tokens = ",".join(dict.fromkeys([*env_leases(), got.token]))
        click.echo(f"export {ENV_LEASE}={shlex.quote(tokens)}")
    else:
        click.echo(got.token)
    logs.say(f"took {_describe(got.info)}", lease=got.info.id)


@lease.command("renew", context_settings=CONTEXT)
@click.argument("tokens", nargs=-1, metavar="[TOKEN]...")
@click.option("--ttl", type=click.IntRange(1, MAX_LEASE_TTL), default=None, metavar="SECONDS",
              help="New lifetime from now (default: the lease's own TTL).")
@connection_options
@click.pass_context
def lease_renew(ctx: click.Context, tokens: tuple[str, ...], ttl: int | None) -> None:
    """Extend leases to now + TTL (default tokens: $BUSBRIDGE_LEASE)."""
    toks = _tokens(tokens)

    async def go(c: AsyncClient) -> list[LeaseInfo]:
        return [await c.lease_renew(t, ttl) for t in toks]

    for info in with_client(options(ctx), go):
        click.echo(f"renewed {_describe(info)}")


@lease.command("release", context_settings=CONTEXT)
@click.argument("tokens", nargs=-1, metavar="[TOKEN]...")
@click.option("--force", "force_ids", multiple=True, metavar="ID",
              help="Release the lease with this public id (`lease list`) whoever holds it: "
                   "an admin op (docs/admin.md). Repeatable.")
@connection_options
@click.pass_context
def lease_release(ctx: click.Context, tokens: tuple[str, ...],
                  force_ids: tuple[str, ...]) -> None:
    """Give leases back (default tokens: $BUSBRIDGE_LEASE); already gone is not an error."""
    if force_ids:
        if tokens:
            raise click.UsageError("give tokens or --force IDs, not both")

        async def force(c: AsyncClient) -> list[dict[str, Any]]:
            return [await c.admin("lease.release", {"lease": i}) for i in force_ids]

        for lid, got in zip(force_ids, with_client(options(ctx), force), strict=True):
            if got.get("released"):
                held = got.get("lease") or {}
                scope = describe_scope(held.get("kind", "?"), held.get("bus", "?"),
                                       held.get("address"), held.get("cs"))
                click.echo(f"force-released lease {lid} on {scope} "
                           f"(held by {held.get('holder', '?')})")
            else:
                click.echo(f"lease {lid}: no live lease (already gone)")
        return
    toks = _tokens(tokens)

    async def go(c: AsyncClient) -> list[bool]:
        return [await c.lease_release(t) for t in toks]

    for i, released in enumerate(with_client(options(ctx), go)):
        click.echo(f"token {i + 1}: {'released' if released else 'no live lease (already gone)'}")


@lease.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@connection_options
@click.pass_context
def lease_list(ctx: click.Context, as_json: bool) -> None:
    """Show every live lease on the board (holders and expiry; never tokens)."""
    infos = with_client(options(ctx), lambda c: c.leases())
    if as_json:
        click.echo(json.dumps([x.to_map() for x in infos], indent=2))
        return
    if not infos:
        click.echo("no leases")
        return
    # Every cell came from the server, the holder from whoever took the lease: escaped.
    rows = [("ID", "SCOPE", "HOLDER", "CLIENT", "FROM", "EXPIRES", "LEFT")] + [
        tuple(printable(c) for c in (x.id, x.scope, quoted(x.holder), x.client or "?", x.peer,
                                     x.expires, f"{x.remaining_ms / 1000:.0f}s"))
        for x in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


# ---------------------------------------------------------------------------
# busbridge run --lease
# ---------------------------------------------------------------------------


def _say(msg: str, level: int = logging.INFO) -> None:
    logs.say(msg, level, who="busbridge run")


async def _connect(opts: Options) -> AsyncClient:
    try:
        return await AsyncClient.connect(opts.host, opts.port, timeout=opts.timeout,
                                         name="busbridge-run", auth=opts.auth)
    except RemoteError as e:
        raise CliError(f"{opts.url} refused the connection: {e.message}") from None
    except OSError as e:
        raise ConnectError(connect_failure(opts.url, opts.address, e)) from None


class _Holder:
    """Leases of one ``run``: renewed at TTL/3 over a connection reopened when it drops."""

    def __init__(self, opts: Options, ttl: int) -> None:
        self.opts = opts
        self.ttl = ttl
        self.client: AsyncClient | None = None
        self.held: list[Lease] = []
        self.lost: set[str] = set()

    async def conn(self) -> AsyncClient:
        if self.client is None or not self.client.connected:
            self.client = await _connect(self.opts)
        return self.client

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            for lease in self.held:
                if lease.id in self.lost:
                    continue
                try:
                    await (await self.conn()).lease_renew(lease, self.ttl)
                except RemoteError as e:
                    if e.code is ErrorCode.NO_LEASE:
                        self.lost.add(lease.id)
                    _say(f"could not renew lease {lease.id} on {lease.info.scope}: {e.message}",
                         logging.WARNING)
                except (OSError, CliError) as e:  # board unreachable: retry at the next tick
                    _say(f"could not renew lease {lease.id}: {errmsg(e)}; retrying",
                         logging.WARNING)

    async def release(self) -> None:
        for lease in self.held:
            try:
                await (await self.conn()).lease_release(lease)
            except (OSError, RemoteError, CliError) as e:
                _say(f"could not release lease {lease.id} on {lease.info.scope} "
                     f"({errmsg(e)}): it ends at its TTL", logging.WARNING)
        if self.client is not None:
            await self.client.close()


async def _hold_and_run(opts: Options, scopes: Sequence[Scope], ttl: int, wait: float,
                        holder: str, program: str, command: Sequence[str],
                        env: dict[str, str]) -> int:
    h = _Holder(opts, ttl)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    proc: asyncio.subprocess.Process | None = None
    stopped_by: list[int] = []

    def on_signal(sig: int) -> None:
        if proc is not None:  # the command decides what the signal means; we wait for it
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
        elif main is not None and not stopped_by:  # still taking leases: give up cleanly
            stopped_by.append(sig)
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        client = await h.conn()
        for sc in scopes:
            try:
                h.held.append(await take(client, sc, ttl=ttl, holder=holder, wait=wait,
                                         on_wait=lambda m: _say(f"waiting up to {wait:g} s: {m}")))
            except RemoteError as e:
                raise CliError(e.message + (f" (waited {wait:g} s)" if wait else "")) from None
            except (ConnectionLost, OSError) as e:
                raise CliError(errmsg(e)) from None
        env[ENV_LEASE] = ",".join(dict.fromkeys(
            [*env_leases(env), *(x.token for x in h.held)]))
        for x in h.held:
            _say(f"holding {_describe(x.info)}")
        proc = await asyncio.create_subprocess_exec(program, *command[1:], env=env)
        renewer = asyncio.ensure_future(h.renew_forever())
        try:
            code = await proc.wait()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        return code if code >= 0 else 128 - code
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        return 128 + stopped_by[0]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await h.release()


def hold_and_run(opts: Options, scopes: Sequence[str], ttl: int, wait: float, holder: str | None,
                 program: str, command: Sequence[str], env: dict[str, str]) -> int:
    """Take ``scopes``, run the command with their tokens in ``$BUSBRIDGE_LEASE``, release.

    Returns the command's exit status (128+N if a signal N killed it).
    """
    try:
        parsed = [Scope.parse(s) for s in scopes]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--lease") from None
    sys.stdout.flush()
    sys.stderr.flush()
    return run_loop(_hold_and_run(opts, parsed, ttl, wait, holder or default_holder(command),
                                  program, command, env))

