"""Local bus numbers as the kernel names devices, and the ``--map`` entries that use them.

``/dev/i2c-%d`` and ``/dev/spidev%d.%d``: decimal, no sign, no leading zero, so
``/dev/i2c-01`` is no device (the preload library parses paths by the same rule,
csrc/open.c ``number``).  ``busbridge run`` and ``busbridge mount`` check their
``--map`` entries here before anything starts, so a typo is an error, not a map
that silently never applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The largest bus number the preload library accepts (csrc/open.c ``match``).
MAX_BUS = 0xFFFFF

_NUMBER = re.compile(r"0|[1-9][0-9]*")


def bus_number(text: str) -> int | None:
    """``text`` as a device's bus number, or None if the kernel would not name one so."""
    if not _NUMBER.fullmatch(text):
        return None
    n = int(text)
    return n if n <= MAX_BUS else None


def check_maps(entries: Iterable[str]) -> None:
    """Raise ValueError for a ``[i2c:|spi:]LOCAL=REMOTE`` entry no device could use:
    an unknown kind, a LOCAL that is not a bus number, or a second, different map for
    a local bus (``cs:PIN=BUS.CS`` entries are the drop-ins' and pass through)."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for raw in entries:
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            left, eq, remote = item.partition("=")
            kind, colon, local = left.partition(":")
            if not colon:
                kind, local = "", left
            kind, local, remote = kind.strip(), local.strip(), remote.strip()
            if kind == "cs":
                continue
            if kind not in ("", "i2c", "spi"):
                raise ValueError(f"{item!r}: unknown bus kind {kind!r} (i2c or spi)")
            if not eq or not remote:
                raise ValueError(f"{item!r}: expected [i2c:|spi:]LOCAL=REMOTE")
            if bus_number(local) is None:
                raise ValueError(
                    f"{item!r}: LOCAL must be a bus number as in /dev/i2c-N: 0 to {MAX_BUS}, "
                    "decimal, no sign or leading zero")
            for k in (kind,) if kind else ("i2c", "spi"):
                earlier = seen.setdefault((k, local), (item, remote))
                if earlier[1] != remote:
                    raise ValueError(f"{earlier[0]!r} and {item!r} both map {k} bus {local}")
