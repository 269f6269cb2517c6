"""The board side: server, sessions, scheduling, leases, limits, access rules, TLS and tokens."""
