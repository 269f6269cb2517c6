"""The bus side of chip models: an I2C chip, the pointer-register engine, an SPI front.

:class:`I2CChip` owns the :class:`~bridge.buses.sim.i2c_devices.ModelDevice`
that sits on the bus (chip models are plain Python; see ``ModelDevice`` for
why they do not subclass the compiled device) and gives every chip the same
faults.  :class:`RegisterChip` is the pointer-register protocol most sensors
speak: a chip says what its registers hold (:meth:`~RegisterChip.read_reg`),
what a write does (:meth:`~RegisterChip.write_reg`) and where the pointer goes
next (:meth:`~RegisterChip.next_reg`); the engine frames the bytes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import ClassVar, Literal, Unpack

from ..i2c_devices import ModelDevice
from ..model import MAX_FAULT_COUNT, MAX_STALL_S, Clock, Conversions, Fault, Param, SimModel, Value
from ..spi import SpiDeviceOptions
from ..spi_devices import SpiRegisterDevice

#: Faults every I2C chip model supports.
I2C_FAULTS = (
    Fault("nack", "NACK the address (ENXIO) until turned off", (Param("on", "bool", True),)),
    Fault("nack-next", "NACK the next COUNT address phases, then answer again",
          (Param("count", "int", 1, 0, MAX_FAULT_COUNT),)),
    Fault("nack-after-bytes", "in write messages ACK COUNT data bytes, NACK the next "
          "(EREMOTEIO); -1 turns it off", (Param("count", "int", None, -1, MAX_FAULT_COUNT),)),
    Fault("stall", "hold the bus SECONDS each time the chip is addressed (0: off)",
          (Param("seconds", "float", None, 0.0, MAX_STALL_S),)),
    Fault("clear", "remove every fault"),
)
#: Faults every SPI chip model supports.
SPI_FAULTS = (
    Fault("fail", "fail messages (EIO) from transfer INDEX on, until turned off",
          (Param("on", "bool", True), Param("index", "int", 0, 0, MAX_FAULT_COUNT))),
    Fault("stall", "hold the bus SECONDS before each message (0: off)",
          (Param("seconds", "float", None, 0.0, MAX_STALL_S),)),
    Fault("clear", "remove every fault"),
)
#: For chips that convert: results stop coming.
STUCK = Fault("stuck", "conversions stop completing: busy stays set, data-ready never "
              "does (a driver's wait must time out); `clear` resumes")


class I2CChip(SimModel):
    """A chip model on an I2C bus (at ``address``, or on SPI through :class:`SpiRegisterFront`).

    ``device`` is what goes on the bus.  Bus hooks run under ``lock``.
    """

    def __init__(self, address: int | None, *, extra: tuple[int, ...] = (),
                 ten_bit: bool = False, name: str = "", clock: Clock = time.monotonic,
                 values: Mapping[str, object] | None = None, nack: bool = False,
                 nack_after_bytes: int | None = None, stall_s: float = 0.0) -> None:
        super().__init__(name=name, clock=clock, values=values)
        self.nack_next = 0
        self.timers: list[Conversions] = []
        self.spi_device: SpiRegisterDevice | None = None
        self.device: ModelDevice | None = None
        if address is not None:
            self.device = ModelDevice(self, address, extra=extra, ten_bit=ten_bit,
                                      name=self.name, nack=nack,
                                      nack_after_bytes=nack_after_bytes, stall_s=stall_s)

    def i2c_device(self) -> ModelDevice:
        """The device to put on an I2C bus."""
        if self.device is None:
            raise ValueError(f"{self.name} was made for SPI")
        return self.device

    def timer(self) -> Conversions:
        """A conversion timer on this chip's clock that the ``stuck`` fault reaches."""
        t = Conversions(self.clock)
        self.timers.append(t)
        return t

    def faults(self) -> tuple[Fault, ...]:
        bus = SPI_FAULTS if self.spi_device is not None else I2C_FAULTS
        return bus + ((STUCK,) if self.timers else ()) + self.FAULTS

    def apply_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        dev = self.device if self.device is not None else self.spi_device
        assert dev is not None
        if fault == "stuck":
            for t in self.timers:
                t.stuck = True
        elif fault == "clear":
            self.nack_next = 0
            dev.stall_s = 0.0
            if self.device is not None:
                self.device.nack = False
                self.device.nack_after_bytes = None
            if self.spi_device is not None:
                self.spi_device.fail = False
            for t in self.timers:
                if t.stuck:
                    t.stuck = False
                    t.t0 = self.clock()  # resumes from now, as a chip would
            self.chip_fault("clear", params)
        elif fault == "stall":
            dev.stall_s = float(params["seconds"])
        elif fault == "nack" and self.device is not None:
            self.device.nack = bool(params["on"])
        elif fault == "nack-next":
            self.nack_next = int(params["count"])
        elif fault == "nack-after-bytes" and self.device is not None:
            count = int(params["count"])
            self.device.nack_after_bytes = None if count < 0 else count
        elif fault == "fail" and self.spi_device is not None:
            self.spi_device.fail = bool(params["on"])
            self.spi_device.fail_index = int(params["index"])
        else:
            self.chip_fault(fault, params)

    def chip_fault(self, fault: str, params: Mapping[str, Value]) -> None:
        """A chip's own faults (its ``FAULTS``); also told of ``clear``."""
        if fault != "clear":
            super().apply_fault(fault, params)

    # -- bus hooks (ModelDevice forwards them) ------------------------------------------

    def ack(self, address: int, read: bool) -> bool:
        with self.lock:
            if self.nack_next > 0:
                self.nack_next -= 1
                return False
            return self.chip_ack(read)

    def chip_ack(self, read: bool) -> bool:
        """Whether the chip ACKs its address now (busy parts do not)."""
        return True

    def start(self, address: int, read: bool) -> None:
        """A START or repeated START to this chip was ACKed."""

    def restart(self) -> None:
        """A repeated START (to any device) after this chip was addressed."""

    def write(self, data: bytes) -> int:
        return len(data)

    def read(self, length: int) -> bytes:
        return b"\xff" * length

    def stop(self) -> None:
        """The STOP that ends a transaction in which this chip was addressed."""


class RegisterChip(I2CChip):
    """A pointer-register chip: write the pointer, then write or read register values.

    ``POINTER_BYTES`` of pointer, registers ``WIDTH`` bytes wide (``WIDTHS``
    per register) in ``ORDER``; ``RESET`` the reset values (``registers``
    override them, and survive a soft reset as a board's strapping would).
    A read latches a register's value at its first byte, so a 16-bit result
    never tears; a fully read register moves the pointer on by
    :meth:`next_reg` (default: the next register; no-increment chips return
    the same one), and so does a written one unless ``WRITE_PAIRS`` (Bosch:
    register, value, register, value ...).  Partial values are dropped at STOP.
    """

    POINTER_BYTES: ClassVar[int] = 1
    WIDTH: ClassVar[int] = 1
    WIDTHS: ClassVar[Mapping[int, int]] = {}
    ORDER: ClassVar[Literal["big", "little"]] = "big"
    RESET: ClassVar[Mapping[int, int]] = {}
    READ_ONLY: ClassVar[frozenset[int]] = frozenset()
    #: Writes are (pointer, value) pairs rather than one pointer and consecutive values.
    WRITE_PAIRS: ClassVar[bool] = False

    def __init__(self, address: int | None, *, registers: Mapping[int, int] | None = None,
                 extra: tuple[int, ...] = (), ten_bit: bool = False, name: str = "",
                 clock: Clock = time.monotonic, values: Mapping[str, object] | None = None,
                 nack: bool = False, nack_after_bytes: int | None = None,
                 stall_s: float = 0.0) -> None:
        super().__init__(address, extra=extra, ten_bit=ten_bit, name=name, clock=clock,
                         values=values, nack=nack, nack_after_bytes=nack_after_bytes,
                         stall_s=stall_s)
        self.overrides = dict(registers or {})
        self.regs: dict[int, int] = {}
        self.pointer = 0
        self._ptr_left = 0
        self._ptr_acc = 0
        self._wbuf = bytearray()
        self._rbuf = b""
        self._rpos = 0
        self.reset_registers()

    # -- what a chip overrides ------------------------------------------------------

    def reset_registers(self) -> None:
        """Reset values (soft reset and power-on)."""
        self.regs = {**self.RESET, **self.overrides}

    def width(self, reg: int) -> int:
        return self.WIDTHS.get(reg, self.WIDTH)

    def read_reg(self, reg: int) -> int:
        """A bus read of ``reg``: its value, with the read's side effects (clearing flags)."""
        return self.regs.get(reg, 0)

    def write_reg(self, reg: int, value: int) -> None:
        """A bus write of a whole value to ``reg``."""
        if reg not in self.READ_ONLY:
            self.regs[reg] = value

    def next_reg(self, reg: int) -> int:
        return (reg + 1) % (1 << (8 * self.POINTER_BYTES))

    def set_pointer(self, value: int) -> None:
        """The pointer bytes of a write arrived (LIS3DH takes a flag from them)."""
        self.pointer = value

    def peek(self, reg: int) -> int:
        """A register without a bus read's side effects, for tests."""
        with self.lock:
            self.update()
            return self.regs.get(reg, 0)

    # -- the engine ------------------------------------------------------------------

    def _close_read(self) -> None:
        if self._rbuf and self._rpos >= len(self._rbuf):
            self.pointer = self.next_reg(self.pointer)
        self._rbuf = b""
        self._rpos = 0

    def start(self, address: int, read: bool) -> None:
        with self.lock:
            self.update()
            self._close_read()
            self._wbuf.clear()
            self._ptr_left = 0 if read else self.POINTER_BYTES
            self._ptr_acc = 0

    def write(self, data: bytes) -> int:
        with self.lock:
            for b in data:
                if self._ptr_left:
                    self._ptr_acc = (self._ptr_acc << 8) | b
                    self._ptr_left -= 1
                    if not self._ptr_left:
                        self.set_pointer(self._ptr_acc)
                    continue
                reg = self.pointer
                self._wbuf.append(b)
                if len(self._wbuf) < self.width(reg):
                    continue
                value = int.from_bytes(self._wbuf, self.ORDER)
                self._wbuf.clear()
                if self.WRITE_PAIRS:
                    self._ptr_left = self.POINTER_BYTES
                    self._ptr_acc = 0
                else:
                    self.pointer = self.next_reg(reg)
                self.write_reg(reg, value)
            return len(data)

    def read(self, length: int) -> bytes:
        with self.lock:
            out = bytearray()
            while len(out) < length:
                if self._rpos >= len(self._rbuf):
                    if self._rbuf:
                        self.pointer = self.next_reg(self.pointer)
                    reg = self.pointer
                    w = self.width(reg)
                    value = self.read_reg(reg) & ((1 << (8 * w)) - 1)
                    self._rbuf = value.to_bytes(w, self.ORDER)
                    self._rpos = 0
                take = min(length - len(out), len(self._rbuf) - self._rpos)
                out += self._rbuf[self._rpos : self._rpos + take]
                self._rpos += take
            return bytes(out)

    def stop(self) -> None:
        with self.lock:
            self._close_read()
            self._wbuf.clear()
            self._ptr_left = 0

    # -- on SPI -------------------------------------------------------------------------

    def attach_spi(self, *, rw_bit: int = 0x80, read_when_set: bool = True,
                   increment_bit: int | None = None,
                   **options: Unpack[SpiDeviceOptions]) -> SpiRegisterDevice:
        """Put this model on SPI (address byte + values, ST/Bosch style) instead of I2C."""
        self.spi_device = SpiRegisterFront(self, rw_bit=rw_bit, read_when_set=read_when_set,
                                           increment_bit=increment_bit, **options)
        return self.spi_device


class SpiRegisterFront(SpiRegisterDevice):
    """A :class:`RegisterChip` model seen through SPI framing: the model's registers,
    read and written with their side effects."""

    def __init__(self, model: RegisterChip, *, rw_bit: int, read_when_set: bool,
                 increment_bit: int | None, **options: Unpack[SpiDeviceOptions]) -> None:
        super().__init__(rw_bit=rw_bit, read_when_set=read_when_set,
                         increment_bit=increment_bit, **options)
        self.model = model

    @property
    def registers(self) -> dict[int, int]:
        """The model's registers (as the generic SPI register device names them)."""
        return self.model.regs

    @registers.setter
    def registers(self, value: dict[int, int]) -> None:
        pass  # the base class's initial table; the model has the real one

    def select(self) -> None:
        super().select()
        with self.model.lock:
            self.model.update()

    def get(self, reg: int) -> int:
        with self.model.lock:
            return self.model.read_reg(reg) & 0xFF

    def put(self, reg: int, value: int) -> None:
        with self.model.lock:
            self.model.write_reg(reg, value & 0xFF)
