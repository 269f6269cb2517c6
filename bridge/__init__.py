"""busbridge: everything with I/O — server, bus backends, client, CLI.

Depends on :mod:`protocol` (sans-I/O); never the other way round.
"""

__version__ = "0.1.0"
