"""ADCs, power monitors, PWM and GPIO expanders, a clock, a display, memories: PyPI drivers."""

from __future__ import annotations

import time

import pytest

from .conftest import Bench


def test_ads1115_adafruit_and_ads1115(bench: Bench) -> None:
    bench.chip("2", 0x49).set(ain0=1.234, ain2=-0.5, ain3=0.25)
    got = bench.run("""
        import board, ADS1115
        from adafruit_ads1x15 import ADS1115 as Ads, AnalogIn, ads1x15
        with driver("adafruit-circuitpython-ads1x15"):
            ads = Ads(board.I2C(), address=0x49)
            out["single"] = AnalogIn(ads, ads1x15.Pin.A0).voltage
            out["diff"] = AnalogIn(ads, ads1x15.Pin.A2, ads1x15.Pin.A3).voltage
            ads.gain = 4
            out["gain4"] = AnalogIn(ads, ads1x15.Pin.A0).voltage
        with driver("ADS1115"):
            out["mv"] = ADS1115.ADS1115(address=0x49).readADCSingleEnded(channel=0)
    """, bus="2")
    assert got["single"] == pytest.approx(1.234, abs=0.001)
    assert got["diff"] == pytest.approx(-0.75, abs=0.001)
    assert got["gain4"] == pytest.approx(1.024, abs=0.001)  # clamped at ±1.024 V full scale
    assert got["mv"] == pytest.approx(1234, abs=1)


def test_ina219_adafruit(bench: Bench) -> None:
    bench.chip("1", 0x40).set(bus_voltage=12.0, current=0.25)
    got = bench.run("""
        import time, board, adafruit_ina219
        with driver("adafruit-circuitpython-ina219"):
            ina = adafruit_ina219.INA219(board.I2C())
            # One triggered conversion with the calibration the constructor wrote, so
            # CNVR's set and clear are the driver's doing, not a continuous cycle's.
            ina.mode = adafruit_ina219.Mode.SANDBVOLT_TRIGGERED
            deadline = time.monotonic() + 10
            while not ina.conversion_ready:
                assert time.monotonic() < deadline, "CNVR never set"
                time.sleep(0.001)
            out["v"], out["ma"], out["w"] = ina.bus_voltage, ina.current, ina.power
            out["ready_after_power"] = ina.conversion_ready  # reading power clears CNVR
    """)
    assert got["v"] == pytest.approx(12.0, abs=0.004)
    assert got["ma"] == pytest.approx(250.0, abs=0.1)
    assert got["w"] == pytest.approx(3.0, abs=0.01)
    assert got["ready_after_power"] is False


def test_pca9685_adafruit_and_pca9685_smbus2(bench: Bench) -> None:
    pwm = bench.chip("2", 0x40)
    pwm.set(frequency=60.0)
    got = bench.run("""
        import board, adafruit_pca9685
        from PCA9685_smbus2 import PCA9685
        with driver("adafruit-circuitpython-pca9685"):
            p = adafruit_pca9685.PCA9685(board.I2C())
            out["freq_read"] = p.frequency
            p.frequency = 50
            p.channels[0].duty_cycle = 0x8000
        with driver("PCA9685-smbus2"):
            q = PCA9685.PCA9685(interface=1, address=0x40)
            q.set_pwm(3, 0, 1024)
    """, bus="2")
    assert got["freq_read"] == pytest.approx(60.0, rel=0.01)
    # PCA9685-smbus2's constructor turns every channel off (set_all_pwm(0, 0)) and wakes
    # the chip: channel 0 is off again, channel 3 at a quarter.
    state = pwm.get()
    assert state["frequency"] == pytest.approx(50.0, rel=0.01)
    assert (state["duty0"], state["duty3"]) == (0.0, 0.25)


def test_mcp23017_adafruit_and_mcp23017(bench: Bench) -> None:
    io = bench.chip("1", 0x20)
    io.set(driven=0x0003, inputs=0x0001)  # GPA0 driven high, GPA1 low, others float
    got = bench.run("""
        import board, smbus2, digitalio
        from adafruit_mcp230xx.mcp23017 import MCP23017
        import mcp23017
        with driver("adafruit-circuitpython-mcp230xx"):
            m = MCP23017(board.I2C(), address=0x20)
            pins = [m.get_pin(i) for i in range(3)]
            pins[2].pull = digitalio.Pull.UP
            out["adafruit"] = [p.value for p in pins]
            led = m.get_pin(8)
            led.switch_to_output(value=True)
        with driver("mcp23017"):
            x = mcp23017.MCP23017(0x20, smbus2.SMBus(1))
            out["pkg"] = x.digital_read(mcp23017.GPA0)
    """)
    assert got["adafruit"] == [True, False, True]  # high, low, floating with its pull-up
    assert got["pkg"] == 0xFF  # mcp23017's HIGH
    assert io.get()["outputs"] == 0x0100  # GPB0 driven high by the driver


def test_ds3231_adafruit(bench: Bench) -> None:
    rtc = bench.chip("1", 0x68)
    started = time.monotonic()
    rtc.set(time="2031-05-06T07:08:09", temperature=21.75)
    got = bench.run("""
        import time, board, adafruit_ds3231
        with driver("adafruit-circuitpython-ds3231"):
            d = adafruit_ds3231.DS3231(board.I2C())
            t = d.datetime
            out["read"] = [t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec]
            out["temp"] = d.temperature
            d.datetime = time.struct_time((2040, 2, 29, 23, 59, 58, 2, -1, -1))
            out["lost_power"] = d.lost_power
    """)
    elapsed = time.monotonic() - started
    y, mo, d, h, mi, s = got["read"]
    assert (y, mo, d, h, mi) == (2031, 5, 6, 7, 8)
    assert 9 <= s <= 9 + elapsed + 1  # the clock runs (from the set to the driver's read)
    assert got["temp"] == 21.75
    assert rtc.get()["time"][:16] in ("2040-02-29T23:59", "2040-03-01T00:00")


def test_ssd1306_adafruit_and_luma(bench: Bench) -> None:
    oled = bench.chip("1", 0x3C)
    got = bench.run("""
        import board, adafruit_ssd1306
        from luma.core.interface.serial import i2c
        from luma.core.render import canvas
        from luma.oled.device import ssd1306
        with driver("adafruit-circuitpython-ssd1306"):
            d = adafruit_ssd1306.SSD1306_I2C(128, 64, board.I2C())
            d.fill(0)
            d.pixel(3, 4, 1)
            d.show()
            d.contrast(0x40)
        with driver("luma.oled"):
            dev = ssd1306(i2c(port=1, address=0x3C))
            dev.persist = True  # leave the picture on at exit
            with canvas(dev) as draw:
                draw.rectangle((100, 10, 109, 19), outline="white", fill="white")
            dev.contrast(0x20)
            out["luma"] = True
    """)
    assert got == {"luma": True}
    px = oled.pixels()  # type: ignore[attr-defined]
    assert px[4][3] == 0  # luma drew the whole frame: Adafruit's pixel is gone
    assert sum(map(sum, px)) == 100
    assert all(px[y][x] for y in range(10, 20) for x in range(100, 110))
    assert oled.get() == {"display_on": True, "contrast": 0x20, "inverted": False}
    assert oled.screenshot()[:4] == b"\x89PNG"  # type: ignore[attr-defined]


def test_24c32_adafruit_and_at24cxxx(bench: Bench) -> None:
    ee = bench.chip("1", 0x50)
    ee.set(write_time_s=0.005)  # the datasheets' write cycle: NACKs until it ends
    got = bench.run("""
        import board, adafruit_24lc32
        from AT24Cxxx import AT24Cxxx
        with driver("adafruit-circuitpython-24lc32"):
            e = adafruit_24lc32.EEPROM_I2C(board.I2C(), address=0x50)
            e[0x100:0x105] = b"hello"
            out["adafruit"] = bytes(e[0x100:0x105]).decode()
            out["len"] = len(e)
        with driver("AT24Cxxx"):
            a = AT24Cxxx(1, 0x50)
            a.writeString(0x200, "busbridge")
            out["at24"] = "".join(a.readChar(0x200 + i) for i in range(9))
    """)
    assert got == {"adafruit": "hello", "len": 4096, "at24": "busbridge"}


def test_w25q32_over_spidev_polls_wip(bench: Bench) -> None:
    """No Blinka-compatible SPI flash driver exists on PyPI: the JEDEC protocol over spidev,
    as flashrom-style code does it, with the program time set through test control."""
    flash = bench.board.spi["0"]
    from bridge.buses.sim.control import find

    ctl = find(bench.board.i2c, bench.board.spi, "spi", "0", 0)
    ctl.set(program_time_s=0.5)  # long enough that the first poll sees WIP on a busy host
    got = bench.run("""
        import time, spidev
        with driver("spidev (JEDEC commands)"):
            d = spidev.SpiDev()
            d.open(0, 0)
            out["jedec"] = d.xfer2([0x9F, 0, 0, 0])[1:]
            d.xfer2([0x06])
            d.xfer2([0x02, 0x00, 0x10, 0x00, 0xDE, 0xAD])
            polls = 0
            while d.xfer2([0x05, 0])[1] & 1:  # WIP
                polls += 1
                time.sleep(0.005)
            out["polled"] = polls > 0
            out["data"] = d.xfer2([0x03, 0x00, 0x10, 0x00, 0, 0])[4:]
    """)
    assert got == {"jedec": [0xEF, 0x40, 0x16], "polled": True, "data": [0xDE, 0xAD]}
    assert bytes(flash.device(0).memory[0x1000:0x1002]) == b"\xde\xad"  # type: ignore[attr-defined]
