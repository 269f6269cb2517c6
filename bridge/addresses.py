"""``HOST:PORT`` text, read and written the same way by every side.

Two readings, on purpose:

* :func:`parse_address` is what a client *dials*: lenient, with defaults
  (``lab-pi`` means port 7707, ``:7707`` means localhost, ``tcp://`` is allowed),
  because people type it on command lines and in ``$BUSBRIDGE_URL``;
* :func:`parse_host_port` is what a board file or ``--listen`` *declares*: both
  parts required, IPv6 in brackets, port 0 allowed (an ephemeral listen port),
  because a guessed default there would silently serve on the wrong address.

Both sides may import this module (it has no I/O and imports only ``protocol``).
"""

from __future__ import annotations

from protocol.limits import DEFAULT_PORT

__all__ = ["format_address", "parse_address", "parse_host_port", "split_host_port"]


def split_host_port(text: str) -> tuple[str, str]:
    """``HOST[:PORT]`` or ``[v6]:PORT`` (a trailing ``/`` allowed) → ``(host, port text)``;
    a bare IPv6 address has no port.  Only splits: the callers decide the defaults."""
    s = text.rstrip("/")
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if s.count(":") == 1:
        host, _, port = s.partition(":")
        return host, port
    return s, ""


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]``, ``[v6]:PORT`` or ``tcp://HOST:PORT`` → ``(host, port)``."""
    s = text.strip()
    if s.startswith("tcp://"):
        s = s[6:]
    host, port = split_host_port(s)
    if not host:
        host = "127.0.0.1"
    try:
        p = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 < p < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, p


def parse_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` / ``"[v6]:port"`` -> (host, port), both required."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, [::1]:7707")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} out of range")
    return host, port


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets so the text parses back."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
