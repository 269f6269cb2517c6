"""Event-loop selection: uvloop when it is installed, asyncio otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """``asyncio.run`` on uvloop when available (≈2× lower latency per frame)."""
    if use_uvloop and have_uvloop():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    if use_uvloop and have_uvloop():
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
