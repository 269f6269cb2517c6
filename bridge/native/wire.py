"""The private wire between the preload library and the agent (``csrc/bb.h``).

One request at a time per connection, on a Unix stream socket that only the
user running ``busbridge run`` can reach.  Native byte order: both ends are
on the same machine.  Frames are a ``u32`` length (of what follows) then,
from the library, ``u32 op, u32 handle, body``; from the agent, ``i32 result``
(>= 0, or a negative errno) then data.  The layouts are defined here once for
Python and in ``csrc/*.c`` for C; ``tests/native`` runs the C against this.
"""

from __future__ import annotations

import struct

OP_OPEN_I2C = 1
OP_OPEN_SPI = 2
OP_CLOSE = 3
OP_I2C_XFER = 4
OP_I2C_SMBUS = 5
OP_I2C_SET = 6
OP_SPI_MSG = 7
OP_SPI_RW = 8
OP_SPI_GET = 9
OP_SPI_SET = 10

#: Operations the library sends without waiting for an answer.
NO_REPLY = frozenset({OP_CLOSE})

LEN = struct.Struct("=I")
HEAD = struct.Struct("=II")  # op, handle
RES = struct.Struct("=i")

OPEN_I2C = struct.Struct("=i")  # local bus number
OPEN_SPI = struct.Struct("=ii")  # local bus number, chip select
#: OPEN reply after the result: handle, then I2C_FUNCS (i2c) or spidev's bufsiz (spi).
OPENED = struct.Struct("=II")

XFER_COUNT = struct.Struct("=I")
#: One ``i2c_msg`` without its buffer: addr, flags, len (for I2C_M_RECV_LEN: the
#: caller's first byte, the number of bytes before the block), padding.
XFER_MSG = struct.Struct("=HHHxx")
READ_LEN = struct.Struct("=H")

#: addr, client flags, read_write, command, has_data, pad, size, union i2c_smbus_data.
SMBUS = struct.Struct("=HHBBBxI34s")
SMBUS_DATA = struct.Struct("=34s")

I2C_SET = struct.Struct("=IIQ")  # I2C_RETRIES / I2C_TIMEOUT, pad, value

#: ``struct spi_ioc_transfer`` with tx_buf/rx_buf reduced to 0/1 (present or not).
SPI_IOC_TRANSFER = struct.Struct("=QQIIHBBBBBB")
SPI_RW = struct.Struct("=II")  # 0 read / 1 write, count
SPI_STATE = struct.Struct("=III")  # mode, bits per word, speed_hz
SPI_SET = struct.Struct("=II")  # what (below), value

SPI_SET_MODE = 1
SPI_SET_LSB_FIRST = 2
SPI_SET_BITS = 3
SPI_SET_SPEED = 4

#: Longest request the agent accepts: 42 messages of 8192 bytes plus headers.
MAX_REQUEST = 42 * (8192 + XFER_MSG.size) + 64
