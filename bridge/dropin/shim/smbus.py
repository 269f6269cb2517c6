"""``smbus`` (python-smbus, Debian's python3-smbus) for code run under ``busbridge run``."""

from bridge.dropin.pysmbus import SMBus  # noqa: F401

__version__ = "4.3+busbridge"
