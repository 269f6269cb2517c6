"""Opt-in compiled hot path: ``BUSBRIDGE_COMPILE=1`` builds these modules with mypyc.

Everything else about the package is in pyproject.toml.  The compiled build needs
mypy and a C compiler in the build environment, and the runtime dependencies
installed first (mypyc type-checks against them), so it is built without build
isolation; see docs/performance.md.  Without the variable the package is pure Python.
"""

import os

from setuptools import setup

#: The modules every request runs through on the board side (and the protocol,
#: which the clients share).  Listed once: .ci/run builds the same set.
COMPILED = [
    "protocol/codec.py",
    "protocol/connection.py",
    "protocol/errors.py",
    "protocol/events.py",
    "protocol/limits.py",
    "protocol/virtio.py",
    "bridge/server/execute.py",
    "bridge/server/server.py",
    "bridge/buses/sim/i2c.py",
    "bridge/buses/sim/i2c_devices.py",
]

ext_modules = []
if os.environ.get("BUSBRIDGE_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
