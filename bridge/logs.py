"""Structured, quiet-by-default logging: one ``key=value`` line per event, or JSON.

Call sites pass fields through ``extra={"fields": {...}}`` (see :func:`event`),
so the same records can be rendered as logfmt for people or JSON for machines.

Many fields carry text a client chose (its HELLO name, a bus name, a lease
holder), so both formats escape every character that could fake a line or
drive a terminal: control characters (CR, ESC, BEL, NUL, NEL...), Unicode line
separators and format characters, quotes, and in logfmt also ``=`` inside a
quoted value, so a client named ``x level=error`` cannot trip ``grep
level=error``.  :func:`printable` is the same escaping for a terminal.  Both
renderings stamp ISO-8601 UTC times.

What a command tells the person at the terminal — ``serving …``, a warning, the
final error — goes through :func:`say`: a ``busbridge: …`` line (escaped with
:func:`printable`), or one more JSON record under ``--log-json``, so that stream
stays pure JSON.

:class:`LogGate` keeps events that an attacker can trigger at will (refused
connections, denied requests, wrong tokens) from filling the disk: past a
burst, lines are counted instead of written, and the count is reported.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

#: The logger :func:`say` writes through in JSON mode.
CLI_LOGGER = "busbridge.cli"
#: The audit trail: admin ops that changed something (a simulated value, a fault, a
#: trace opened or closed).  Normal events, so INFO, but written at the default
#: level too (:func:`setup` keeps this logger at INFO): who changed the board matters
#: after the fact, and is rare enough not to be noise.
AUDIT_LOGGER = "busbridge.audit"

_json_mode = False


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields``; cheap when the level is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})


#: Characters a logfmt value may hold unquoted: printable ASCII but for space, '"', '=', '\'.
_BARE = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('"=\\')
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _u(c: str) -> str:
    """``\\uXXXX`` for ``c`` (a surrogate pair beyond the BMP), as JSON writes it."""
    cp = ord(c)
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def _escape(s: str, also: str, backslash: bool = True) -> str:
    """``s`` with non-printable characters, those in ``also`` and (if ``backslash``)
    backslashes escaped.

    Python's ``str.isprintable`` is false for every control, format, separator
    (but the ASCII space), private-use and unassigned character: C0/C1 controls
    including NEL, U+2028/9, bidirectional overrides, zero-width characters.
    """
    if s.isprintable() and (not backslash or "\\" not in s) and not any(c in s for c in also):
        return s  # the common case: nothing to do
    out = []
    for c in s:
        if c == "\\" and not backslash:
            out.append(c)
        elif c in _SHORT:
            out.append(_SHORT[c])
        elif c in also or not c.isprintable():
            out.append('\\"' if c == '"' else _u(c))
        else:
            out.append(c)
    return "".join(out)


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control and invisible characters as ``\\uXXXX``.

    For text a server sent, whose client-supplied parts it already quoted with
    :func:`quoted` (backslashes doubled there): backslashes stay as they are, so
    those quotes read the same, and nothing that reaches the terminal is a
    control character whatever the server did.
    """
    return _escape(text, "", backslash=False)


def quoted(text: str) -> str:
    """``"text"`` for a message: quotes, backslashes and non-printables escaped, so
    client-chosen text cannot end the quote, fake an escape or drive a terminal."""
    return '"' + _escape(text, '"') + '"'


def iso_time(created: float) -> str:
    """``2026-12-01T07:46:46.387Z``: the one timestamp format of both renderings."""
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{t}.{int(created * 1000) % 1000:03d}Z"


def quote(v: Any) -> str:
    """A logfmt value: bare if it is plain printable ASCII, else quoted and escaped."""
    s = v if isinstance(v, str) else repr(v) if isinstance(v, bytes) else str(v)
    if s and all(c in _BARE for c in s):
        return s
    return '"' + _escape(s, '"=') + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [f"ts={iso_time(record.created)}", f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={quote(record.getMessage())}"]
        fields = getattr(record, "fields", None) or {}
        parts += [f"{quote(k)}={quote(v)}" for k, v in fields.items()]
        if record.exc_info:
            parts.append(f"exc={quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``ensure_ascii`` escapes every non-ASCII character."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in (getattr(record, "fields", None) or {}).items():
            out.setdefault(str(k), v)  # a field never overrides level, msg...
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=True)


def setup(verbosity: int = 0, *, json_format: bool = False) -> None:
    """WARNING by default (the audit trail, :data:`AUDIT_LOGGER`, INFO); ``-v`` INFO,
    ``-vv`` DEBUG.  Logs go to stderr."""
    global _json_mode
    _json_mode = json_format
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else LogfmtFormatter())
    root = logging.getLogger("busbridge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger(AUDIT_LOGGER).setLevel(min(level, logging.INFO))


class LogGate:
    """Lines of one kind (by message) past a burst are counted, not written.

    Each message has a bucket of ``burst`` lines refilled at ``rate`` per
    second; a line that finds it empty is dropped and counted.  The next line
    that passes carries ``suppressed=N``, and :meth:`flush` (the server calls
    it every few seconds) writes one summary line per message with a count, so
    a flood costs at most ``burst + rate × seconds`` lines and is never silent.
    The table is keyed by message text, which comes from the code, never from
    a client, so it stays as small as the number of call sites.
    """

    def __init__(self, rate: float = 1.0, burst: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        #: message -> [tokens, stamp, suppressed, logger, level]
        self._state: dict[str, list[Any]] = {}

    def event(self, logger: logging.Logger, level: int, msg: str, **fields: Any) -> bool:
        """Log like :func:`event` unless over the budget; True if the line was written."""
        if not logger.isEnabledFor(level):
            return False
        now = self.clock()
        st = self._state.get(msg)
        if st is None:
            st = self._state[msg] = [self.burst, now, 0, logger, level]
        st[0] = min(self.burst, st[0] + (now - st[1]) * self.rate)
        st[1] = now
        if st[0] < 1.0:
            st[2] += 1
            return False
        st[0] -= 1.0
        if st[2]:
            fields["suppressed"] = st[2]
            st[2] = 0
        logger.log(level, msg, extra={"fields": fields})
        return True

    def suppressed(self, msg: str) -> int:
        st = self._state.get(msg)
        return int(st[2]) if st is not None else 0

    def flush(self) -> None:
        """Write how many lines of each message were suppressed since they were last told."""
        for msg, st in self._state.items():
            if st[2]:
                event(st[3], st[4], "log lines suppressed", event=msg, count=st[2])
                st[2] = 0
def json_mode() -> bool:
    return _json_mode


_PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: "}


def say(msg: str, level: int = logging.INFO, *, who: str = "busbridge",
        text: str | None = None, **fields: Any) -> None:
    """Tell the person at the terminal, whatever ``-v`` says: ``busbridge: msg`` on stderr
    (``busbridge: warning: …``, ``busbridge: error: …``), or a JSON record under
    ``--log-json``.  ``text`` replaces the whole plain line (i2c-tools' own wording)."""
    if _json_mode:
        record = logging.LogRecord(CLI_LOGGER, level, __file__, 0, msg, None, None)
        record.fields = fields
        sys.stderr.write(JsonFormatter().format(record) + "\n")
    else:
        # The message may carry text from the server and, through it, from other
        # clients (lease holders, bus names): never a control character on the terminal.
        sys.stderr.write(printable(text if text is not None
                                   else f"{who}: {_PREFIX.get(level, '')}{msg}") + "\n")
    sys.stderr.flush()
