"""Every ``BUSBRIDGE_*`` environment variable busbridge reads, named once.

The client, the drop-in layers, the MQTT lookup and the commands all read these,
and ``busbridge run`` sets them for the program it starts; one table keeps the
writer and the readers from drifting apart.  (Variables only the test suite and
the build scripts read, such as ``BUSBRIDGE_E2E_REQUIRED`` and ``BUSBRIDGE_CACHE``,
are documented where they are used.)
"""

from __future__ import annotations

#: ``HOST:PORT`` of the busbridge server the drop-in layers and commands connect to.
URL = "BUSBRIDGE_URL"
#: Local-to-remote bus map of the drop-in layers (``i2c:1=2,spi:0=main,cs:D5=0.2``).
MAP = "BUSBRIDGE_MAP"
#: Seconds the drop-in layers wait for one answer (default 5).
TIMEOUT = "BUSBRIDGE_TIMEOUT"
#: Board name to look up on the MQTT broker when no URL is given.
BOARD = "BUSBRIDGE_BOARD"
#: MQTT broker of the board lookup, ``[mqtt[s]://][user[:password]@]host[:port]``.
BROKER = "BUSBRIDGE_BROKER"
#: Topic prefix on the MQTT broker (default ``busbridge``).
MQTT_PREFIX = "BUSBRIDGE_MQTT_PREFIX"
#: Lease tokens (comma-separated) this process's connections present in HELLO.
LEASE = "BUSBRIDGE_LEASE"
#: Holder name shown to others in ``busy`` errors for leases this process takes.
HOLDER = "BUSBRIDGE_HOLDER"
#: ``1``/``true``/``yes``/``on``: connect with TLS (implied by a CA or certificate).
TLS = "BUSBRIDGE_TLS"
#: CA file that signed the server's certificate.
TLS_CA = "BUSBRIDGE_TLS_CA"
#: This client's certificate, for mutual TLS.
TLS_CERT = "BUSBRIDGE_TLS_CERT"
#: Key of the client certificate, if not in the same file.
TLS_KEY = "BUSBRIDGE_TLS_KEY"
#: Name to check in the server's certificate (default: the host connected to).
TLS_SERVER_NAME = "BUSBRIDGE_TLS_SERVER_NAME"
#: The access token itself (a secret: never logged).
TOKEN = "BUSBRIDGE_TOKEN"
#: File holding the access token (wins over ``BUSBRIDGE_TOKEN``).
TOKEN_FILE = "BUSBRIDGE_TOKEN_FILE"
#: Socket of the ``busbridge run`` agent that native programs' ioctls go to (set by
#: ``busbridge run``, read by the preload library).
NATIVE_SOCKET = "BUSBRIDGE_NATIVE_SOCKET"
#: Path of the preload library to use instead of the one built with the package.
PRELOAD_LIBRARY = "BUSBRIDGE_PRELOAD_LIBRARY"
#: ``HOST:PORT`` ``busbridge serve`` listens on (beats the board file's ``[server] listen``);
#: ``busbridge health`` checks the same port, so a container sets the port in one place.
LISTEN = "BUSBRIDGE_LISTEN"
#: ``HOST:PORT`` of ``busbridge serve``'s Prometheus endpoint (beats ``[server] metrics``).
METRICS = "BUSBRIDGE_METRICS"

__all__ = ["BOARD", "BROKER", "HOLDER", "LEASE", "LISTEN", "MAP", "METRICS", "MQTT_PREFIX",
           "NATIVE_SOCKET", "PRELOAD_LIBRARY", "TIMEOUT", "TLS", "TLS_CA", "TLS_CERT", "TLS_KEY",
           "TLS_SERVER_NAME", "TOKEN", "TOKEN_FILE", "URL"]
