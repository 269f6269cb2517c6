"""The chip models' behaviour in time, on a clock the test steps (nothing here sleeps).

Each test drives a model through a simulated bus, byte for byte as a driver
would, and checks what its datasheet says the part does.
"""

from __future__ import annotations

import errno
import struct
import threading
import zlib

import pytest

from bridge.buses.base import BusError
from bridge.buses.sim import (
    Ads1115,
    Bme280,
    Ds3231,
    I2CChip,
    Ina219,
    Lis3dh,
    Lm75,
    Mcp9808,
    Mcp23017,
    Mpu6050,
    Pca9685,
    Sht31,
    SimI2CBus,
    Ssd1306,
    Tmp117,
)
from bridge.buses.sim.chips.bme280 import humidity_rh, pressure_pa, t_fine, trimming
from bridge.buses.sim.chips.sht31 import crc8
from bridge.buses.sim.model import Noise, Sequence, value_source
from protocol.virtio import read, write


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def on_bus(chip: I2CChip) -> SimI2CBus:
    return SimI2CBus("t", devices=[chip.i2c_device()])


def rd(bus: SimI2CBus, addr: int, reg: int, n: int, ptr: bytes | None = None) -> bytes:
    (data,) = bus.transfer([write(addr, ptr if ptr is not None else bytes([reg])),
                            read(addr, n)])
    return data


def wr(bus: SimI2CBus, addr: int, data: bytes) -> None:
    bus.transfer([write(addr, data)])


def word(bus: SimI2CBus, addr: int, reg: int) -> int:
    return int.from_bytes(rd(bus, addr, reg, 2), "big")


# -- the control API ----------------------------------------------------------------


def test_set_checks_names_types_and_ranges_before_applying_any(clock: Clock) -> None:
    chip = Bme280(0x76, clock=clock)
    with pytest.raises(ValueError, match="no quantity 'temp'"):
        chip.set(temp=20.0)
    with pytest.raises(ValueError, match=r"outside 300\.\.1100 hPa"):
        chip.set(temperature=30.0, pressure=50.0)
    assert chip.get()["temperature"] == 25.0  # nothing applied
    with pytest.raises(ValueError, match="expected a float"):
        chip.set(temperature="hot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not set"):
        Ssd1306(0x3C, clock=clock).set(contrast=3)


def test_faults_are_declared_and_checked(clock: Clock) -> None:
    chip = Tmp117(0x48, clock=clock)
    names = [f.name for f in chip.faults()]
    assert names[:5] == ["nack", "nack-next", "nack-after-bytes", "stall", "clear"]
    assert "stuck" in names
    with pytest.raises(ValueError, match="no fault 'melt'"):
        chip.inject("melt")
    with pytest.raises(ValueError, match="takes no parameter 'n'"):
        chip.inject("nack-next", n=3)
    bus = on_bus(chip)
    chip.inject("nack-next", count=2)
    for _ in range(2):
        with pytest.raises(BusError) as info:
            word(bus, 0x48, 0x0F)
        assert info.value.errno == errno.ENXIO
    assert word(bus, 0x48, 0x0F) == 0x0117
    chip.inject("nack")
    with pytest.raises(BusError):
        word(bus, 0x48, 0x0F)
    chip.inject("clear")
    assert word(bus, 0x48, 0x0F) == 0x0117
    described = chip.describe()
    assert described["model"] == "tmp117"
    assert described["quantities"][0]["unit"] == "°C"


def test_value_sources_change_once_per_conversion(clock: Clock) -> None:
    chip = Mcp9808(0x18, clock=clock, values={"temperature": {"sequence": [20.0, 21.0, 22.0]}})
    bus = on_bus(chip)
    first = word(bus, 0x18, 5) & 0x1FFF
    assert word(bus, 0x18, 5) & 0x1FFF == first  # no conversion in between: same result
    seen = []
    for _ in range(4):
        clock.advance(0.25)  # one conversion at 0.0625 °C
        seen.append((word(bus, 0x18, 5) & 0xFFF) / 16)
    assert seen == [21.0, 22.0, 20.0, 21.0]
    noisy = value_source({"setpoint": 10.0, "noise": 0.5, "seed": 3})
    assert isinstance(noisy, Noise)
    assert noisy.value(7) == noisy.value(7)
    assert noisy.value(7) != noisy.value(8)
    assert isinstance(value_source({"sequence": [1, 2]}), Sequence)
    with pytest.raises(ValueError, match="expected a number"):
        value_source({"sequence": []})


def test_a_set_never_tears_a_burst_read(clock: Clock) -> None:
    """A set from another thread lands between transactions: every 6-byte burst is one
    sample, old or new, never half of each."""
    chip = Mpu6050(0x68, clock=clock)
    bus = on_bus(chip)
    wr(bus, 0x68, b"\x6b\x00")  # wake
    clock.advance(0.01)
    done = threading.Event()

    def setter() -> None:
        for i in range(300):
            g = 1.0 if i % 2 else -1.0
            chip.set(accel_x=g, accel_y=g, accel_z=g)
        done.set()

    t = threading.Thread(target=setter)
    t.start()
    while not done.is_set():
        x, y, z = struct.unpack(">hhh", rd(bus, 0x68, 0x3B, 6))
        assert x == y == z
    t.join()


# -- TMP117 ----------------------------------------------------------------------------


def test_tmp117_data_ready_set_one_conversion_after_the_mode_write(clock: Clock) -> None:
    chip = Tmp117(0x48, clock=clock)
    bus = on_bus(chip)
    assert word(bus, 0x48, 1) & 0x2000  # power-on: a result waiting
    assert not word(bus, 0x48, 1) & 0x2000  # reading the configuration cleared it
    wr(bus, 0x48, b"\x01\x02\x20")  # continuous, 8 averages: 125 ms active, 1 s cycle
    clock.advance(0.12)
    assert not word(bus, 0x48, 1) & 0x2000
    clock.advance(0.01)
    assert word(bus, 0x48, 1) & 0x2000
    clock.advance(1.0)
    assert word(bus, 0x48, 0) == 0x0C80  # 25 °C; reading the result clears Data_Ready too
    assert not word(bus, 0x48, 1) & 0x2000


def test_tmp117_soft_reset_clears_itself_and_reloads(clock: Clock) -> None:
    chip = Tmp117(0x48, clock=clock)
    bus = on_bus(chip)
    wr(bus, 0x48, b"\x02\x12\x34")  # THigh
    wr(bus, 0x48, b"\x01\x02\x22")  # Soft_Reset
    assert word(bus, 0x48, 1) == 0x0220  # bit 1 reads 0, reset value back
    assert word(bus, 0x48, 2) == 0x6000
    assert word(bus, 0x48, 0) == 0x8000  # -256 °C until the first conversion
    clock.advance(0.13)
    assert word(bus, 0x48, 0) == 0x0C80


def test_tmp117_one_shot_returns_to_shutdown(clock: Clock) -> None:
    chip = Tmp117(0x48, clock=clock, values={"temperature": 30.0})
    bus = on_bus(chip)
    word(bus, 0x48, 1)
    wr(bus, 0x48, b"\x01\x0c\x00")  # one-shot, no averaging: 15.5 ms
    assert (word(bus, 0x48, 1) >> 10) & 3 == 3
    clock.advance(0.016)
    cfg = word(bus, 0x48, 1)
    assert (cfg >> 10) & 3 == 1  # shutdown
    assert cfg & 0x2000
    chip.set(temperature=-10.5)
    assert word(bus, 0x48, 0) == (-1344) & 0xFFFF  # set takes effect at once
    clock.advance(5)
    assert word(bus, 0x48, 0) == (-1344) & 0xFFFF  # shut down: no new conversion


def test_stuck_conversions_never_signal_data_ready(clock: Clock) -> None:
    chip = Tmp117(0x48, clock=clock)
    bus = on_bus(chip)
    word(bus, 0x48, 1)
    chip.inject("stuck")
    clock.advance(10)
    assert not word(bus, 0x48, 1) & 0x2000
    chip.inject("clear")
    clock.advance(1.0)
    assert word(bus, 0x48, 1) & 0x2000


# -- BME280 ------------------------------------------------------------------------------


def test_bme280_forced_measurement_status_and_sleep(clock: Clock) -> None:
    chip = Bme280(0x76, clock=clock, values={"temperature": 19.0})
    bus = on_bus(chip)
    wr(bus, 0x76, b"\xf2\x01\xf4\x25")  # (register, value) pairs: humidity x1, forced x1
    assert rd(bus, 0x76, 0xF3, 1) == b"\x08"  # measuring
    clock.advance(0.009)
    assert rd(bus, 0x76, 0xF3, 1) == b"\x00"
    assert rd(bus, 0x76, 0xF4, 1)[0] & 3 == 0  # back to sleep
    chip.set(temperature=31.0, pressure=900.0, humidity=80.0)
    data = rd(bus, 0x76, 0xF7, 8)
    tr = trimming(chip.regs)
    adc_t = int.from_bytes(data[3:6], "big") >> 4
    adc_p = int.from_bytes(data[0:3], "big") >> 4
    tf = t_fine(tr, adc_t)
    assert tf / 5120 == pytest.approx(31.0, abs=0.01)
    assert pressure_pa(tr, tf, adc_p) / 100 == pytest.approx(900.0, abs=0.02)
    assert humidity_rh(tr, tf, int.from_bytes(data[6:8], "big")) == pytest.approx(80.0, abs=0.01)


def test_bme280_reset_register_reads_zero_and_resets(clock: Clock) -> None:
    chip = Bme280(0x76, clock=clock)
    bus = on_bus(chip)
    wr(bus, 0x76, b"\xf4\x27\xf5\xa0")  # normal mode, t_sb 1000 ms
    wr(bus, 0x76, b"\xe0\xb6")
    assert rd(bus, 0x76, 0xE0, 1) == b"\x00"
    assert rd(bus, 0x76, 0xF4, 2) == b"\x00\x00"
    assert rd(bus, 0x76, 0xF3, 1) == b"\x01"  # im_update: NVM copy
    clock.advance(0.003)
    assert rd(bus, 0x76, 0xF3, 1) == b"\x00"
    assert rd(bus, 0x76, 0xD0, 1) == b"\x60"
    assert rd(bus, 0x76, 0xFA, 3) == b"\x80\x00\x00"  # no measurement since the reset


# -- the others ------------------------------------------------------------------------


def test_mcp9808_resolution_and_shutdown(clock: Clock) -> None:
    chip = Mcp9808(0x18, clock=clock, values={"temperature": 23.7})
    bus = on_bus(chip)
    assert (word(bus, 0x18, 5) & 0xFFF) / 16 == 23.6875
    wr(bus, 0x18, b"\x08\x00")  # 0.5 °C
    clock.advance(0.03)
    assert (word(bus, 0x18, 5) & 0xFFF) / 16 == 23.5
    wr(bus, 0x18, b"\x01\x01\x00")  # shutdown
    chip.set(temperature=30.0)  # set: the result now...
    clock.advance(1)
    assert (word(bus, 0x18, 5) & 0xFFF) / 16 == 30.0


def test_lm75_resolution_by_variant(clock: Clock) -> None:
    for variant, expect in (("lm75", 0x1900), ("pct2075", 0x1920)):
        chip = Lm75(0x48, clock=clock, variant=variant, values={"temperature": 25.2})  # type: ignore[arg-type]
        assert word(on_bus(chip), 0x48, 0) == expect


def test_sht31_single_shot_nacks_until_done_and_checks_crc(clock: Clock) -> None:
    assert crc8(b"\xbe\xef") == 0x92  # the datasheet's example
    chip = Sht31(0x44, clock=clock, values={"temperature": 25.0, "humidity": 50.0})
    bus = on_bus(chip)
    wr(bus, 0x44, b"\x24\x00")  # high repeatability, no clock stretching
    with pytest.raises(BusError) as info:
        bus.transfer([read(0x44, 6)])
    assert info.value.errno == errno.ENXIO
    clock.advance(0.016)
    (data,) = bus.transfer([read(0x44, 6)])
    t, rh = int.from_bytes(data[0:2], "big"), int.from_bytes(data[3:5], "big")
    assert crc8(data[0:2]) == data[2]
    assert crc8(data[3:5]) == data[5]
    assert -45 + 175 * t / 65535 == pytest.approx(25.0, abs=0.01)
    assert 100 * rh / 65535 == pytest.approx(50.0, abs=0.01)
    with pytest.raises(BusError):
        bus.transfer([read(0x44, 6)])  # read once
    chip.inject("crc-error", count=1)
    wr(bus, 0x44, b"\x2c\x06")  # clock stretching: the read waits for the result
    (data,) = bus.transfer([read(0x44, 6)])
    assert crc8(data[0:2]) != data[2]
    assert crc8(data[3:5]) == data[5]


def test_ads1115_os_bit_mux_and_pga(clock: Clock) -> None:
    chip = Ads1115(0x48, clock=clock, values={"ain0": 1.0, "ain1": 0.25})
    bus = on_bus(chip)
    assert word(bus, 0x48, 1) == 0x8583
    wr(bus, 0x48, b"\x01\xc3\x83")  # OS, AIN0-GND, ±4.096 V, single shot, 128 SPS
    assert not word(bus, 0x48, 1) & 0x8000  # converting
    clock.advance(1 / 128)
    assert word(bus, 0x48, 1) & 0x8000
    assert word(bus, 0x48, 0) == 8000  # 1 V / 4.096 V × 32768
    wr(bus, 0x48, b"\x01\x85\x83")  # AIN0-AIN1 differential, ±2.048 V
    clock.advance(0.01)
    assert word(bus, 0x48, 0) == 12000  # 0.75 V


def test_ina219_cnvr_current_and_reset(clock: Clock) -> None:
    chip = Ina219(0x40, clock=clock, values={"bus_voltage": 12.0, "current": 0.5})
    bus = on_bus(chip)
    wr(bus, 0x40, b"\x05\x10\x00")  # calibration 4096: 0.1 mA per bit on 0.1 ohm
    clock.advance(0.002)
    bus_reg = word(bus, 0x40, 2)
    assert bus_reg >> 3 == 3000  # 12 V / 4 mV
    assert bus_reg & 2  # CNVR
    assert word(bus, 0x40, 1) == 5000  # 50 mV in 10 µV
    assert word(bus, 0x40, 4) == 5000  # 500 mA in 0.1 mA
    word(bus, 0x40, 3)  # reading power clears CNVR
    assert not word(bus, 0x40, 2) & 2
    wr(bus, 0x40, b"\x00\x80\x00")
    assert word(bus, 0x40, 0) == 0x399F
    assert word(bus, 0x40, 5) == 0


def test_pca9685_auto_increment_prescale_and_outputs(clock: Clock) -> None:
    chip = Pca9685(0x40, clock=clock)
    bus = on_bus(chip)
    assert rd(bus, 0x40, 0, 1) == b"\x11"
    wr(bus, 0x40, b"\xfe\x79")  # prescale 121 while asleep: 50 Hz
    wr(bus, 0x40, b"\x00\xa1")  # wake, RESTART, AI
    wr(bus, 0x40, b"\x06\x00\x00\x00\x08")  # LED0: on 0, off 2048
    assert chip.get()["duty0"] == 0.5
    assert chip.get()["frequency"] == pytest.approx(50.0, rel=0.01)
    wr(bus, 0x40, b"\xfe\x03")  # awake: PRE_SCALE ignores writes
    assert rd(bus, 0x40, 0xFE, 1) == b"\x79"
    chip.set(duty5=1.0)
    assert rd(bus, 0x40, 0x06 + 20, 4) == b"\x00\x10\x00\x00"  # full on


def test_mcp23017_inputs_outputs_and_interrupt_on_change(clock: Clock) -> None:
    chip = Mcp23017(0x20, clock=clock, values={"inputs": 0, "driven": 0xFFFF})
    bus = on_bus(chip)
    wr(bus, 0x20, b"\x00\x0f\xff")  # IODIRA: GPA0-3 inputs, 4-7 outputs; IODIRB inputs
    wr(bus, 0x20, b"\x14\xa0")  # OLATA
    assert chip.get()["outputs"] == 0xA0
    wr(bus, 0x20, b"\x04\x01")  # GPINTENA: GPA0
    chip.set(inputs=0x0101)
    assert rd(bus, 0x20, 0x0E, 1) == b"\x01"  # INTFA
    assert rd(bus, 0x20, 0x12, 2) == b"\xa1\x01"  # GPIOA, GPIOB (auto-increment)
    assert rd(bus, 0x20, 0x0E, 1) == b"\x00"  # cleared by reading GPIO


def test_ds3231_runs_and_keeps_the_written_time(clock: Clock) -> None:
    chip = Ds3231(0x68, clock=clock)
    bus = on_bus(chip)
    assert rd(bus, 0x68, 0x0F, 1)[0] & 0x80  # OSF at power-on
    wr(bus, 0x68, b"\x00\x55\x59\x23\x03\x31\x12\x99")  # 2099-12-31 23:59:55, day 3
    clock.advance(7.4)
    assert rd(bus, 0x68, 0, 7) == b"\x02\x00\x00\x04\x01\x81\x00"  # 2100, century bit
    assert chip.get()["time"] == "2100-01-01T00:00:02"
    with pytest.raises(ValueError, match=r"2000\.\.2199"):
        chip.set(time="1999-12-31T23:59:59", temperature=30.0)
    assert chip.get()["temperature"] == 25.0  # nothing applied
    chip.set(time="2026-02-28T12:00:00")
    wr(bus, 0x68, b"\x0e\x3c")  # CONV
    assert rd(bus, 0x68, 0x0F, 1)[0] & 0x04  # BSY
    clock.advance(0.25)
    assert not rd(bus, 0x68, 0x0E, 1)[0] & 0x20
    assert rd(bus, 0x68, 0x11, 2) == b"\x19\x00"  # 25.00 °C


def test_mpu6050_reset_sleep_samples_and_data_ready(clock: Clock) -> None:
    chip = Mpu6050(0x68, clock=clock, values={"accel_x": 0.5, "gyro_z": -250.0})
    bus = on_bus(chip)
    assert rd(bus, 0x68, 0x75, 1) == b"\x68"
    wr(bus, 0x68, b"\x6b\x80")
    assert rd(bus, 0x68, 0x6B, 1) == b"\x40"  # reset clears itself: asleep
    clock.advance(1)
    assert rd(bus, 0x68, 0x3A, 1) == b"\x00"  # asleep: no samples
    wr(bus, 0x68, b"\x1b\x18\x08")  # auto-increment: GYRO_CONFIG ±2000 °/s, ACCEL ±4 g
    wr(bus, 0x68, b"\x6b\x00")
    clock.advance(0.002)
    assert rd(bus, 0x68, 0x3A, 1) == b"\x01"
    assert rd(bus, 0x68, 0x3A, 1) == b"\x00"  # cleared by the read
    ax, *_ = struct.unpack(">hhhhhhh", rd(bus, 0x68, 0x3B, 14))
    assert ax == 4096
    assert struct.unpack(">h", rd(bus, 0x68, 0x47, 2))[0] == -4100


def test_lis3dh_zyxda_and_i2c_auto_increment(clock: Clock) -> None:
    chip = Lis3dh(0x19, clock=clock, values={"accel_z": -0.5})
    bus = on_bus(chip)
    assert rd(bus, 0x19, 0x0F, 1) == b"\x33"
    wr(bus, 0x19, b"\x20\x77")  # 400 Hz
    assert not rd(bus, 0x19, 0x27, 1)[0] & 0x08
    clock.advance(0.003)
    assert rd(bus, 0x19, 0x27, 1)[0] & 0x08
    data = rd(bus, 0x19, 0, 6, ptr=b"\xa8")  # sub-address MSB: auto-increment
    assert struct.unpack("<hhh", data)[2] >> 6 == -125  # normal mode ±2 g: 4 mg/digit
    assert not rd(bus, 0x19, 0x27, 1)[0] & 0x08
    assert rd(bus, 0x19, 0, 2, ptr=b"\x28") == data[:1] * 2  # no MSB: the same register


def test_ssd1306_draws_and_renders_a_png(clock: Clock) -> None:
    chip = Ssd1306(0x3C, clock=clock)
    bus = on_bus(chip)
    with pytest.raises(BusError):
        bus.transfer([read(0x3C, 1)])
    for c in (0xAE, 0x20, 0x00, 0xA1, 0xC8, 0x21, 0, 127, 0x22, 0, 7, 0xAF):
        wr(bus, 0x3C, bytes([0x80, c]))
    wr(bus, 0x3C, b"\x40" + b"\x01" + bytes(127) + b"\x80")  # pixel (0,0) and (0,15)
    px = chip.pixels()
    assert px[0][0] == 1
    assert px[15][0] == 1
    assert sum(map(sum, px)) == 2
    assert chip.get() == {"display_on": True, "contrast": 0x7F, "inverted": False}
    image = chip.screenshot(scale=2)
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", image[16:24])
    assert (width, height) == (256, 128)
    idat = image.index(b"IDAT")
    (length,) = struct.unpack(">I", image[idat - 4 : idat])
    raw = zlib.decompress(image[idat + 4 : idat + 4 + length])
    assert raw[1:3] == b"\xff\xff"  # row 0: the first pixel lit, 2 × 2
    wr(bus, 0x3C, b"\x00\xa7")  # Co = 0: a command stream; inverse
    assert chip.pixels()[0][0] == 0
