"""What the bench runs: the bench board, the register read, the frame sizes the echo mimics.

Shared by the bridge server process, the clients and ``benchmarks/hot_path.py``,
so every one of them measures the same request against the same device.
"""

from __future__ import annotations

from protocol.virtio import chain, read, write

# Frame sizes of the bridge's register read (write 1-byte pointer, read 2 bytes)
# and of its RESULT, measured from the codec so the echo moves the same bytes.
REG_READ_REQ = 37
REG_READ_RES = 17
SPI_4K = 4096

BENCH_BOARD = """
name = "bench"
[server]
listen = "127.0.0.1:0"
request_timeout_ms = 5000
{i2c}
[[spi]]
name = "0"
backend = "sim"
log_size = 0
[[spi.devices]]
type = "loopback"
cs = 0
"""

BENCH_I2C_BUS = """
[[i2c]]
name = "{n}"
backend = "sim"
log_size = 0
[[i2c.devices]]
type = "regmap"
address = 0x48
value_bits = 16
auto_increment = false
registers = {{ 0x00 = 0x0C80, 0x0F = 0x0117 }}
"""


def bench_board_text(n_i2c: int = 4) -> str:
    """The bench board: ``n_i2c`` I2C buses ("1".."n") with a TMP117-like chip, SPI loopback."""
    return BENCH_BOARD.format(i2c="".join(BENCH_I2C_BUS.format(n=i + 1) for i in range(n_i2c)))


#: The measured request: write the pointer, read a 16-bit register, one transaction.
REG_READ = chain([write(0x48, b"\x00"), read(0x48, 2)])

#: The bench's device again on bus "9", stalling: requests to it queue (the memory figure).
STALLED_BUS = BENCH_I2C_BUS.format(n=9) + "stall_s = 0.5\n"
STALL_READ = chain([write(0x48, b"\x00"), read(0x48, 1)])
