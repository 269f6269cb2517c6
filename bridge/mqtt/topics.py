"""Topic names, broker addresses and the JSON payloads a board publishes (no I/O).

Every payload carries ``schema`` (bumped on an incompatible change) and the
``board`` it is about, so a message makes sense without its topic.  Times are
UTC ISO-8601 strings, because people read them in ``mosquitto_sub`` too.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ..addresses import split_host_port

SCHEMA = 1
DEFAULT_PREFIX = "busbridge"
DEFAULT_MQTT_PORT = 1883
DEFAULT_MQTTS_PORT = 8883

#: The four retained topics under ``<prefix>/boards/<board>/``.
TOPIC_KINDS = ("status", "inventory", "health", "leases")


def utc_iso(t: float | None = None) -> str:
    """``2026-12-01T07:41:59.123Z``."""
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class Topics:
    """Where things live for one prefix: ``<prefix>/boards/<board>/<kind>``."""

    prefix: str = DEFAULT_PREFIX

    def board(self, name: str, kind: str) -> str:
        if not name or any(c in name for c in "/#+"):
            raise ValueError(f"board name {name!r} cannot be an MQTT topic level "
                             "(no '/', '#' or '+')")
        return f"{self.prefix}/boards/{name}/{kind}"

    def all_boards(self) -> str:
        """Wildcard for every board's retained topics."""
        return f"{self.prefix}/boards/+/+"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """``(board, kind)`` of a board topic under this prefix, else None."""
        head = f"{self.prefix}/boards/"
        if not topic.startswith(head):
            return None
        board, sep, kind = topic[len(head):].partition("/")
        if not sep or not board or "/" in kind:
            return None
        return board, kind


@dataclass(frozen=True)
class BrokerAddress:
    """``[mqtt[s]://][user[:password]@]host[:port]``: one string for CLI, env and config."""

    host: str
    port: int = DEFAULT_MQTT_PORT
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> BrokerAddress:
        s = text.strip()
        scheme, sep, rest = s.partition("://")
        if not sep:
            scheme, rest = "mqtt", s
        if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker {text!r}: unknown scheme {scheme!r} (mqtt:// or mqtts://)")
        tls = scheme in ("mqtts", "ssl")
        user = password = None
        if "@" in rest:
            cred, _, rest = rest.rpartition("@")
            u, has_pw, p = cred.partition(":")
            user, password = unquote(u), (unquote(p) if has_pw else None)
        host, port_text = split_host_port(rest)
        if not host:
            raise ValueError(f"broker {text!r}: no host")
        try:
            port = int(port_text) if port_text else (DEFAULT_MQTTS_PORT if tls
                                                     else DEFAULT_MQTT_PORT)
        except ValueError:
            raise ValueError(f"broker {text!r}: port {port_text!r} is not a number") from None
        if not 0 < port < 65536:
            raise ValueError(f"broker {text!r}: port {port} out of range")
        return cls(host, port, tls, user or None, password)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts://' if self.tls else ''}{host}:{self.port}"

    def client_kwargs(self, ca_file: str = "") -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client`` (host, port, credentials, TLS)."""
        kw: dict[str, Any] = {"hostname": self.host, "port": self.port,
                              "username": self.username, "password": self.password}
        if self.tls:
            kw["tls_context"] = ssl.create_default_context(cafile=ca_file or None)
        return kw


def encode(payload: dict[str, Any]) -> bytes:
    # default=str: a field of a type JSON lacks (a datetime in a lease) is shown, not fatal.
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def decode(data: bytes | bytearray | str) -> dict[str, Any] | None:
    """A payload, or None for an empty (cleared) or foreign message."""
    if not data:
        return None
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None
