"""Structured, quiet-by-default logging: one ``key=value`` line per event, or JSON.

Call sites pass fields through ``extra={"fields": {...}}`` (see :func:`event`),
so the same records can be rendered as logfmt for people or JSON for machines.
Both renderings stamp ISO-8601 UTC times and escape what a client could have
sent (a bus or client name with a newline or a terminal escape stays one inert
line).  What a command tells the person at the terminal — ``serving …``, a
warning, the final error — goes through :func:`say`: a ``busbridge: …`` line,
or one more JSON record under ``--log-json``, so that stream stays pure JSON.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: The logger :func:`say` writes through in JSON mode.
CLI_LOGGER = "busbridge.cli"

_json_mode = False


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields``; cheap when the level is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})


def iso_time(created: float) -> str:
    """``2026-12-01T07:46:46.387Z``: the one timestamp format of both renderings."""
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{t}.{int(created * 1000) % 1000:03d}Z"


def _quote(v: Any) -> str:
    s = v if isinstance(v, str) else repr(v) if isinstance(v, bytes) else str(v)
    # Quoted (JSON string escapes) when it has a space, '"', '=' or anything unprintable.
    if not s or any(c in s for c in ' "=') or not s.isprintable():
        return json.dumps(s)
    return s


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [f"ts={iso_time(record.created)}", f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={_quote(record.getMessage())}"]
        fields = getattr(record, "fields", None) or {}
        parts += [f"{k}={_quote(v)}" for k, v in fields.items()]
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(verbosity: int = 0, *, json_format: bool = False) -> None:
    """WARNING by default; ``-v`` INFO, ``-vv`` DEBUG.  Logs go to stderr."""
    global _json_mode
    _json_mode = json_format
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else LogfmtFormatter())
    root = logging.getLogger("busbridge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


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
        sys.stderr.write((text if text is not None
                          else f"{who}: {_PREFIX.get(level, '')}{msg}") + "\n")
    sys.stderr.flush()
