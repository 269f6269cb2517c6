"""Structured, quiet-by-default logging: one ``key=value`` line per event.

Call sites pass fields through ``extra={"fields": {...}}`` (see :func:`event`),
so the same records can be rendered as logfmt for people or JSON for machines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields``; cheap when the level is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})


def _quote(v: Any) -> str:
    s = v if isinstance(v, str) else repr(v) if isinstance(v, bytes) else str(v)
    if not s or any(c in s for c in ' "=\t\n'):
        return json.dumps(s)
    return s


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={t}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={_quote(record.getMessage())}"]
        fields = getattr(record, "fields", None) or {}
        parts += [f"{k}={_quote(v)}" for k, v in fields.items()]
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created,
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
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else LogfmtFormatter())
    root = logging.getLogger("busbridge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
