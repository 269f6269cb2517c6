"""Checks, their outcomes, the context they run in, and the loop that runs them.

A check is a function of a :class:`Ctx` that returns a short reason (PASS), or raises
:class:`Fail` or :class:`Skip` with one.  Each names the SPEC.md section it comes
from, so a failure points at the sentence the server breaks.
"""

from __future__ import annotations

import fnmatch
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .model import SpiConfig, Violation, check_error, check_pong, check_welcome
from .wire import PING, Closed, Conn, Frame, Target


class Fail(Exception):
    """The server does not do what SPEC.md says (the message says what it did)."""


class Skip(Exception):
    """The check cannot run against this server or board (the message says why)."""


CheckFn = Callable[["Ctx"], str]


@dataclass(frozen=True)
class Check:
    id: str
    section: str
    title: str
    fn: CheckFn


@dataclass(frozen=True)
class CheckResult:
    id: str
    section: str
    outcome: str  # PASS, FAIL or SKIP
    reason: str
    seconds: float

    def line(self, width: int = 220) -> str:
        """One line: outcome, id, section, reason (control characters escaped, shortened)."""
        reason = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in self.reason)
        if len(reason) > width:
            reason = reason[:width - 3] + "..."
        return f"{self.outcome:<4} {self.id:<34} {self.section:<12} {reason}"


REGISTRY: dict[str, Check] = {}

#: Functions that make checks from SPEC.md's text at run time (the vector replays).
PROVIDERS: list[Callable[[str], list[Check]]] = []


@dataclass(frozen=True)
class Policy:
    """Server policy the caller states; SPEC.md keeps it out of WELCOME (§10)."""

    handshake_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    max_clients: int | None = None
    #: ``BUS@ADDR``: an I2C address this client may not write to (an access rule).
    denied: str | None = None


def check(cid: str, section: str, title: str = "") -> Callable[[CheckFn], CheckFn]:
    """Register a check under a unique id, with the SPEC.md section it tests."""

    def deco(fn: CheckFn) -> CheckFn:
        if cid in REGISTRY:
            raise ValueError(f"duplicate check id {cid}")
        REGISTRY[cid] = Check(cid, section, title or (fn.__doc__ or "").strip().split("\n")[0],
                              fn)
        return fn

    return deco


@dataclass
class Ctx:
    """What a check needs: the target, the server's WELCOME, connections and helpers."""

    target: Target
    spec_text: str
    policy: Policy = field(default_factory=Policy)
    welcome: dict[str, Any] = field(default_factory=dict)
    conns: list[Conn] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

    # -- the WELCOME --------------------------------------------------------------

    @property
    def limits(self) -> dict[str, int]:
        lim: dict[str, int] = self.welcome["limits"]
        return lim

    def i2c_buses(self) -> list[dict[str, Any]]:
        return list(self.welcome.get("i2c", []))

    def spi_buses(self) -> list[dict[str, Any]]:
        return list(self.welcome.get("spi", []))

    def spi_config(self, bus: str) -> SpiConfig:
        for b in self.spi_buses():
            if b["name"] == bus:
                return SpiConfig.unpack(b["config"])
        raise Skip(f"no SPI bus {bus!r}")

    def unknown_bus(self) -> str:
        names = {b["name"] for b in self.i2c_buses() + self.spi_buses()}
        n = 7
        while str(n) in names:
            n += 1
        return str(n)

    # -- connections --------------------------------------------------------------

    def hello_map(self, **extra: Any) -> dict[str, Any]:
        m: dict[str, Any] = {"version": 1, "client": self.target.client_name}
        if self.target.token is not None:
            m["token"] = self.target.token
        m.update(extra)
        return {k: v for k, v in m.items() if v is not _DROP}

    def raw(self, *, client_cert: bool = True) -> Conn:
        """A connection with no HELLO sent, closed when the check ends."""
        c = Conn(self.target, client_cert=client_cert)
        self.conns.append(c)
        return c

    def open(self, **hello: Any) -> Conn:
        """A connection past the handshake (HELLO answered by a valid WELCOME)."""
        c = self.raw()
        c.send([0, 0, self.hello_map(**hello)])
        f = self.recv(c, "WELCOME")
        try:
            c.welcome = check_welcome(f)
        except Violation as e:
            raise Fail(f"handshake: {e}") from None
        return c

    def recv(self, c: Conn, what: str, timeout: float | None = None) -> Frame:
        """The next frame, or Fail saying what was awaited and what happened instead."""
        try:
            return c.recv(timeout)
        except Closed as e:
            raise Fail(f"server closed the connection while the kit awaited {what} ({e})") \
                from None
        except TimeoutError as e:
            raise Fail(f"no {what} ({e})") from None

    def close_all(self) -> None:
        for c in self.conns:
            c.close()
        self.conns.clear()

    # -- common expectations --------------------------------------------------------

    def alive(self, c: Conn, ping_id: int = 0xC0FFEE) -> None:
        """The connection still works: a PING is answered by its PONG as the next frame."""
        try:
            c.send([PING, ping_id])
        except OSError as e:
            raise Fail(f"connection unusable afterwards ({e})") from None
        f = self.recv(c, "the PONG that shows the connection is still open")
        try:
            check_pong(f, ping_id)
        except Violation as e:
            raise Fail(str(e)) from None

    def expect_error(self, c: Conn, code: str, rid: int | set[int] | None, *,
                     fatal: bool | None, what: str = "",
                     timeout: float | None = None) -> tuple[int, str]:
        """Next frame is ERROR ``code`` with id ``rid`` (any of a set; None: any id).

        ``fatal`` True: the server then closes; False: the connection stays usable;
        None: either is accepted (SPEC.md does not say).  Returns (id, message).
        """
        label = f"ERROR {code}" + (f" for {what}" if what else "")
        f = self.recv(c, label, timeout)
        try:
            got_id, got_code, msg = check_error(f)
        except Violation as e:
            raise Fail(f"expected {label}, got {f.brief()} ({e})") from None
        if got_code != code:
            raise Fail(f"expected {label}, got ERROR {got_code} ({msg!r}) id {got_id}")
        ids = {rid} if isinstance(rid, int) else rid
        if ids is not None and got_id not in ids:
            want = " or ".join(str(i) for i in sorted(ids))
            raise Fail(f"ERROR {code} carries id {got_id}, expected {want}")
        if fatal is True:
            try:
                rest = c.wait_closed(self.target.timeout)
            except TimeoutError:
                raise Fail(f"ERROR {code} is fatal (§9) but the server kept the connection "
                           "open") from None
            if rest:
                raise Fail(f"frames after a fatal ERROR: {rest[0].brief()}")
        elif fatal is False:
            try:
                self.alive(c)
            except Fail as e:
                raise Fail(f"ERROR {code} is not fatal (§9), but afterwards: {e}") from None
        return got_id, msg


class _Drop:
    def __repr__(self) -> str:
        return "<drop>"


#: Pass as a ``hello_map`` value to leave the key out.
_DROP: Any = _Drop()
DROP = _DROP


def handshake(target: Target) -> dict[str, Any]:
    """One HELLO/WELCOME to learn the buses and limits every check builds on."""
    ctx = Ctx(target, "")
    try:
        w = ctx.open().welcome
        assert w is not None
        return w
    finally:
        ctx.close_all()


def all_checks(spec_text: str) -> list[Check]:
    """The registered checks, then those made from ``spec_text`` (vectors)."""
    out = list(REGISTRY.values())
    for provide in PROVIDERS:
        out += provide(spec_text)
    return out


def select(checks: list[Check], pattern: str | None) -> list[Check]:
    """Checks whose id matches ``pattern`` (fnmatch; a plain word matches as a substring)."""
    if not pattern:
        return checks
    pats = [p.strip() for p in pattern.split(",") if p.strip()]

    def hit(cid: str) -> bool:
        return any(fnmatch.fnmatchcase(cid, p if any(ch in p for ch in "*?[") else f"*{p}*")
                   for p in pats)

    return [c for c in checks if hit(c.id)]


def run_one(ctx: Ctx, chk: Check) -> CheckResult:
    t0 = time.perf_counter()
    try:
        reason = chk.fn(ctx)
        outcome = "PASS"
    except Fail as e:
        outcome, reason = "FAIL", str(e)
    except Skip as e:
        outcome, reason = "SKIP", str(e)
    except Violation as e:
        outcome, reason = "FAIL", str(e)
    except (OSError, Closed) as e:
        outcome, reason = "FAIL", f"{type(e).__name__}: {e}"
    except Exception as e:  # a bug in the kit must not hide the other checks
        tb = traceback.extract_tb(e.__traceback__)[-1]
        outcome = "FAIL"
        reason = f"kit error {type(e).__name__}: {e} ({tb.filename}:{tb.lineno})"
    finally:
        ctx.close_all()
    return CheckResult(chk.id, chk.section, outcome, reason, time.perf_counter() - t0)


@contextmanager
def opened(ctx: Ctx, **hello: Any) -> Iterator[Conn]:
    c = ctx.open(**hello)
    try:
        yield c
    finally:
        c.close()
