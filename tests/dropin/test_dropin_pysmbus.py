"""``import smbus``: python-smbus's API (Debian's python3-smbus 4.3) over a real server.

The board is tests/boards/dropin.toml.  Where Debian's own module is installed
(``apt-get install python3-smbus``), its docstrings are the reference the
method list and signatures are checked against.
"""

from __future__ import annotations

import errno
import glob
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Running

from bridge.buses.sim.i2c import SimI2CBus
from bridge.cli.run import SHIM_DIR
from bridge.config import Board
from bridge.dropin.pysmbus import SMBus

BME280, MCP9808, EEPROM = 0x76, 0x18, 0x50
BUSBRIDGE = [sys.executable, "-c", "from bridge.cli.main import main; main()"]


def test_every_operation_reaches_the_chips(remote: Running, sim: Board) -> None:
    bus = SMBus(1)
    assert bus.read_byte_data(BME280, 0xD0) == 0x60
    assert bus.read_word_data(MCP9808, 0x06) == 0x5400  # SMBus words are little-endian
    bus.write_i2c_block_data(EEPROM, 0x10, [1, 2, 3, 0x104])  # truncated to bytes
    assert bus.read_i2c_block_data(EEPROM, 0x10, 4) == [1, 2, 3, 4]
    assert len(bus.read_i2c_block_data(EEPROM, 0x10)) == 32  # len defaults to 32
    bus.write_byte_data(EEPROM, 0x20, 0x5A)
    bus.write_byte(EEPROM, 0x20)
    assert bus.read_byte(EEPROM) == 0x5A
    bus.write_word_data(EEPROM, 0x30, 0xBEEF)
    assert bus.read_word_data(EEPROM, 0x30) == 0xBEEF
    bus.write_block_data(EEPROM, 0x40, [7, 8])
    assert bus.read_i2c_block_data(EEPROM, 0x40, 3) == [2, 7, 8]  # count byte first
    assert bus.read_block_data(EEPROM, 0x40) == [7, 8]
    bus.write_quick(EEPROM)
    assert bus.process_call(EEPROM, 0x50, 0x1234) == int.from_bytes(
        bytes(bus.read_i2c_block_data(EEPROM, 0x52, 2)), "little")
    i2c = sim.i2c["1"]
    assert isinstance(i2c, SimI2CBus)
    memory = i2c.device(EEPROM).memory  # type: ignore[attr-defined]
    assert bytes(memory[0x10:0x14]) == b"\x01\x02\x03\x04"
    with pytest.raises(OSError, match="No such device") as info:
        bus.read_byte(0x33)
    assert info.value.errno == errno.ENXIO
    bus.close()


def test_python_smbus_argument_rules(remote: Running) -> None:
    bus = SMBus(1)
    with pytest.raises(OverflowError, match="not more than 32 integers"):
        bus.write_i2c_block_data(EEPROM, 0, list(range(33)))
    with pytest.raises(TypeError, match="must be a list"):
        bus.write_i2c_block_data(EEPROM, 0, (1, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bus.read_byte_data(addr=BME280, cmd=0xD0)  # type: ignore[call-arg]
    with pytest.raises(OSError, match="Invalid argument") as info:
        bus.read_i2c_block_data(EEPROM, 0, 33)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        bus.open("1")  # type: ignore[arg-type]
    closed = SMBus()
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        closed.read_byte(EEPROM)
    assert info.value.errno == errno.EBADF
    assert closed.pec is False
    bus.pec = True
    assert bus.pec is True
    bus.close()
    bus.close()  # twice is fine, as in python-smbus
    assert bus.pec is False


def _debian_smbus() -> object | None:
    for path in glob.glob("/usr/lib/python3/dist-packages/smbus.cpython-*.so"):
        spec = importlib.util.spec_from_file_location("smbus", path)
        if spec is None or spec.loader is None:
            continue
        try:
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        except ImportError:  # built for another Python
            continue
        return mod
    return None


def test_same_methods_and_arguments_as_debians_module() -> None:
    real = _debian_smbus()
    if real is None:
        pytest.skip("Debian's python3-smbus for this Python is not installed")
    cls = real.SMBus  # type: ignore[attr-defined]
    names = {n for n in dir(cls) if not n.startswith("_")}
    assert names == {n for n in dir(SMBus) if not n.startswith("_")}
    for name in names - {"pec"}:
        doc = getattr(cls, name).__doc__
        m = re.match(r"\w+\(([^)]*)\)", doc)
        assert m is not None, name
        theirs = [a.strip().strip("[]").split("=")[0] for a in m.group(1).split(",") if a]
        ours = list(inspect.signature(getattr(SMBus, name)).parameters)[1:]
        assert len(ours) == len(theirs), name
        defaults = [p.default for p in inspect.signature(getattr(SMBus, name)).parameters.values()]
        if "len=32" in doc:
            assert defaults[-1] == 32


def test_import_smbus_under_busbridge_run(remote: Running, tmp_path: Path) -> None:
    prog = ("import smbus, sys\n"
            "bus = smbus.SMBus(int(sys.argv[1]))\n"
            "print(smbus.__file__, hex(bus.read_byte_data(0x76, 0xD0)))\n")
    (tmp_path / "legacy.py").write_text(prog)
    out = subprocess.run([*BUSBRIDGE, "run", "--connect", remote.url, "--map", "i2c:4=1", "--",
                          sys.executable, "legacy.py", "4"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    file, chip_id = out.stdout.split()
    assert Path(file).parent == SHIM_DIR
    assert chip_id == "0x60"
