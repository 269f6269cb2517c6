"""Which build is running: the hot path compiled with mypyc, or pure Python.

The same sources run either way; a compiled install (``BUSBRIDGE_COMPILE=1``,
see docs/board.md) answers a register read in about two thirds of the time, so
a board owner should know which one a server runs.  ``busbridge serve`` says it
at start-up and ``busbridge info --local`` shows it per module; the bench
prints it above its figures.

:data:`HOT_MODULES` is the one list of compiled modules: ``setup.py`` reads it
from this file (without importing the package), so the build and the check
cannot disagree.  This module imports nothing of busbridge for that reason.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = ["HOT_MODULES", "INTERPRETED", "NATIVE_MODULES", "BuildStatus", "build_status"]

#: The modules every request runs through, on both sides, as setup.py compiles them.
HOT_MODULES: tuple[str, ...] = (
    # the protocol, which both sides share
    "protocol.accel",
    "protocol.codec",
    "protocol.connection",
    "protocol.errors",
    "protocol.events",
    "protocol.fastpath",
    "protocol.limits",
    "protocol.refusals",
    "protocol.shapes",
    "protocol.states",
    "protocol.virtio",
    # the board side
    "bridge.server.answers",
    "bridge.server.budget",
    "bridge.server.execute",
    "bridge.server.framing",
    "bridge.server.scheduling",
    "bridge.server.server",
    "bridge.server.session",
    "bridge.server.stats",
    "bridge.server.tally",
    "bridge.buses.sim.common",
    "bridge.buses.sim.i2c",
    "bridge.buses.sim.i2c_devices",
    # the client side: the clients, the drop-in layers and the vhost-user agent
    "bridge.client.aio",
    "bridge.client.blocking",
    "bridge.client.pipeline",
    "bridge.client.requests",
    "bridge.client.sync",
    "bridge.client.threaded",
    "bridge.dropin.busio",
    "bridge.dropin.session",
    "bridge.dropin.smbus",
    "bridge.dropin.spidev",
    "bridge.vhost.backend",
    "bridge.vhost.channel",
    "bridge.vhost.device",
    "bridge.vhost.i2c",
    "bridge.vhost.link",
    "bridge.vhost.memory",
    "bridge.vhost.messages",
    "bridge.vhost.rings",
    "bridge.vhost.spi",
    "bridge.vhost.virtqueue",
)

#: C extensions of the compiled build (``protocol/_native.c`` for ``protocol._native``),
#: each optional: without it the pure path runs (``protocol.accel``).  setup.py reads
#: this list too.
NATIVE_MODULES: tuple[str, ...] = ("protocol._native",)

#: On the request path but left interpreted, and why (mypyc cannot compile them).
INTERPRETED: dict[str, str] = {
    "bridge.client.errors": "its exceptions inherit from two built-in exceptions",
    "bridge.dropin.smbus_msg": "i2c_msg is a ctypes.Structure",
}


@dataclass(frozen=True)
class BuildStatus:
    """Which of :data:`HOT_MODULES` are compiled extension modules here."""

    compiled: tuple[str, ...]
    interpreted: tuple[str, ...]
    #: Which of :data:`NATIVE_MODULES` load here (and so are in use).
    native: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        """``compiled``, ``interpreted`` or ``mixed`` (some modules only: a stale build)."""
        if not self.interpreted:
            return "compiled"
        return "mixed" if self.compiled else "interpreted"

    def summary(self) -> str:
        """One line for a log or a report."""
        n = len(self.compiled) + len(self.interpreted)
        if self.state == "compiled":
            c = "in use" if self.native else "not built: the pure decoder runs"
            return f"hot path compiled (mypyc, {n} modules; C frame decoder {c})"
        if self.state == "interpreted":
            return ("hot path interpreted (pure Python); a compiled install answers faster: "
                    "see docs/board.md")
        return (f"hot path partly compiled ({len(self.compiled)} of {n} modules; "
                f"interpreted: {', '.join(self.interpreted)}): a stale or partial build, "
                "reinstall with BUSBRIDGE_COMPILE=1")


def _is_compiled(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    return bool(origin) and not str(origin).endswith(".py")


def _loads(name: str) -> bool:
    try:
        importlib.import_module(name)  # a C extension: loading it is the test
    except ImportError:
        return False
    return True


def build_status() -> BuildStatus:
    """Look up where each hot module loads from (finds them; imports only their packages
    and the native modules)."""
    flags = [(m, _is_compiled(m)) for m in HOT_MODULES]
    return BuildStatus(tuple(m for m, c in flags if c), tuple(m for m, c in flags if not c),
                       tuple(m for m in NATIVE_MODULES if _loads(m)))
