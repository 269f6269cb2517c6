"""The ctypes layouts and ioctl numbers of bridge.buses.linux.abi, checked
against the kernel's own uapi headers (Debian's linux-libc-dev) by compiling
and running a small C program: sizes, offsets, constants, and byte images of
filled-in structures.  Skips when gcc or the headers are missing, unless
BUSBRIDGE_E2E_REQUIRED=1 (CI), where it fails instead.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.buses.linux import abi
from protocol import handshake as hs

HEADERS = ("linux/i2c.h", "linux/i2c-dev.h", "linux/spi/spidev.h")

PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <stdint.h>
#include <linux/i2c.h>
#include <linux/i2c-dev.h>
#include <linux/spi/spidev.h>

#define FIELD(t, f) printf("\"%s.%s\": [%zu, %zu],\n", #t, #f, offsetof(t, f), \
                           sizeof(((t *)0)->f));
#define SIZE(t) printf("\"sizeof %s\": %zu,\n", #t, sizeof(t));
#define CONST(n) printf("\"%s\": %lu,\n", #n, (unsigned long)(n));

static void dump(const char *name, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("\"bytes %s\": \"", name);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\",\n");
}

int main(void) {
    printf("{\n");
    SIZE(struct i2c_msg) FIELD(struct i2c_msg, addr) FIELD(struct i2c_msg, flags)
    FIELD(struct i2c_msg, len) FIELD(struct i2c_msg, buf)
    SIZE(struct i2c_rdwr_ioctl_data) FIELD(struct i2c_rdwr_ioctl_data, msgs)
    FIELD(struct i2c_rdwr_ioctl_data, nmsgs)
    SIZE(union i2c_smbus_data) FIELD(union i2c_smbus_data, byte)
    FIELD(union i2c_smbus_data, word) FIELD(union i2c_smbus_data, block)
    SIZE(struct i2c_smbus_ioctl_data) FIELD(struct i2c_smbus_ioctl_data, read_write)
    FIELD(struct i2c_smbus_ioctl_data, command) FIELD(struct i2c_smbus_ioctl_data, size)
    FIELD(struct i2c_smbus_ioctl_data, data)
    SIZE(struct spi_ioc_transfer) FIELD(struct spi_ioc_transfer, tx_buf)
    FIELD(struct spi_ioc_transfer, rx_buf) FIELD(struct spi_ioc_transfer, len)
    FIELD(struct spi_ioc_transfer, speed_hz) FIELD(struct spi_ioc_transfer, delay_usecs)
    FIELD(struct spi_ioc_transfer, bits_per_word) FIELD(struct spi_ioc_transfer, cs_change)
    FIELD(struct spi_ioc_transfer, tx_nbits) FIELD(struct spi_ioc_transfer, rx_nbits)
    FIELD(struct spi_ioc_transfer, word_delay_usecs) FIELD(struct spi_ioc_transfer, pad)

    CONST(I2C_RETRIES) CONST(I2C_TIMEOUT) CONST(I2C_SLAVE) CONST(I2C_TENBIT)
    CONST(I2C_FUNCS) CONST(I2C_SLAVE_FORCE) CONST(I2C_RDWR) CONST(I2C_PEC) CONST(I2C_SMBUS)
    CONST(I2C_RDWR_IOCTL_MAX_MSGS) CONST(I2C_M_RD) CONST(I2C_M_TEN) CONST(I2C_M_RECV_LEN)
    CONST(I2C_SMBUS_READ) CONST(I2C_SMBUS_WRITE) CONST(I2C_SMBUS_QUICK) CONST(I2C_SMBUS_BYTE)
    CONST(I2C_SMBUS_BYTE_DATA) CONST(I2C_SMBUS_WORD_DATA) CONST(I2C_SMBUS_PROC_CALL)
    CONST(I2C_SMBUS_BLOCK_DATA) CONST(I2C_SMBUS_I2C_BLOCK_BROKEN)
    CONST(I2C_SMBUS_BLOCK_PROC_CALL) CONST(I2C_SMBUS_I2C_BLOCK_DATA) CONST(I2C_SMBUS_BLOCK_MAX)
    CONST(I2C_FUNC_I2C) CONST(I2C_FUNC_10BIT_ADDR) CONST(I2C_FUNC_PROTOCOL_MANGLING)
    CONST(I2C_FUNC_SMBUS_PEC) CONST(I2C_FUNC_NOSTART) CONST(I2C_FUNC_SMBUS_BLOCK_PROC_CALL)
    CONST(I2C_FUNC_SMBUS_QUICK) CONST(I2C_FUNC_SMBUS_READ_BYTE) CONST(I2C_FUNC_SMBUS_WRITE_BYTE)
    CONST(I2C_FUNC_SMBUS_READ_BYTE_DATA) CONST(I2C_FUNC_SMBUS_WRITE_BYTE_DATA)
    CONST(I2C_FUNC_SMBUS_READ_WORD_DATA) CONST(I2C_FUNC_SMBUS_WRITE_WORD_DATA)
    CONST(I2C_FUNC_SMBUS_PROC_CALL) CONST(I2C_FUNC_SMBUS_READ_BLOCK_DATA)
    CONST(I2C_FUNC_SMBUS_WRITE_BLOCK_DATA) CONST(I2C_FUNC_SMBUS_READ_I2C_BLOCK)
    CONST(I2C_FUNC_SMBUS_WRITE_I2C_BLOCK) CONST(I2C_FUNC_SMBUS_EMUL)
    CONST(SPI_IOC_RD_MODE) CONST(SPI_IOC_WR_MODE) CONST(SPI_IOC_RD_LSB_FIRST)
    CONST(SPI_IOC_WR_LSB_FIRST) CONST(SPI_IOC_RD_BITS_PER_WORD) CONST(SPI_IOC_WR_BITS_PER_WORD)
    CONST(SPI_IOC_RD_MAX_SPEED_HZ) CONST(SPI_IOC_WR_MAX_SPEED_HZ) CONST(SPI_IOC_RD_MODE32)
    CONST(SPI_IOC_WR_MODE32)
    CONST(SPI_CPHA) CONST(SPI_CPOL) CONST(SPI_CS_HIGH) CONST(SPI_LSB_FIRST) CONST(SPI_3WIRE)
    CONST(SPI_LOOP) CONST(SPI_NO_CS) CONST(SPI_READY) CONST(SPI_TX_DUAL) CONST(SPI_TX_QUAD)
    CONST(SPI_RX_DUAL) CONST(SPI_RX_QUAD) CONST(SPI_CS_WORD) CONST(SPI_TX_OCTAL)
    CONST(SPI_RX_OCTAL) CONST(SPI_3WIRE_HIZ)
    for (unsigned n = 1; n <= 600; n++)
        printf("\"SPI_IOC_MESSAGE(%u)\": %lu,\n", n, (unsigned long)SPI_IOC_MESSAGE(n));

    /* Byte images: every field set to a distinct value. */
    struct spi_ioc_transfer t;
    memset(&t, 0, sizeof t);
    t.tx_buf = 0x1122334455667788ULL; t.rx_buf = 0x99aabbccddeeff01ULL; t.len = 0x01020304;
    t.speed_hz = 0x05060708; t.delay_usecs = 0x090a; t.bits_per_word = 0x0b;
    t.cs_change = 0x0c; t.tx_nbits = 0x0d; t.rx_nbits = 0x0e; t.word_delay_usecs = 0x0f;
    dump("spi_ioc_transfer", &t, sizeof t);

    struct i2c_msg m;
    memset(&m, 0, sizeof m);
    m.addr = 0x0a50; m.flags = I2C_M_RD | I2C_M_TEN; m.len = 0x1234;
    m.buf = (__u8 *)(uintptr_t)0x0102030405060708ULL;
    dump("i2c_msg", &m, sizeof m);

    struct i2c_rdwr_ioctl_data r;
    memset(&r, 0, sizeof r);
    r.msgs = (struct i2c_msg *)(uintptr_t)0x1112131415161718ULL; r.nmsgs = 0x2a;
    dump("i2c_rdwr_ioctl_data", &r, sizeof r);

    struct i2c_smbus_ioctl_data s;
    memset(&s, 0, sizeof s);
    s.read_write = I2C_SMBUS_READ; s.command = 0xab; s.size = I2C_SMBUS_PROC_CALL;
    s.data = (union i2c_smbus_data *)(uintptr_t)0x2122232425262728ULL;
    dump("i2c_smbus_ioctl_data", &s, sizeof s);

    union i2c_smbus_data d;
    memset(&d, 0, sizeof d);
    d.word = 0xbeef;
    dump("i2c_smbus_data.word", &d, sizeof d);
    printf("\"end\": 0\n}\n");
    return 0;
}
"""


def _unavailable(why: str) -> None:
    if os.environ.get("BUSBRIDGE_E2E_REQUIRED") == "1":
        pytest.fail(f"BUSBRIDGE_E2E_REQUIRED=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def kernel_abi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    gcc = shutil.which("gcc")
    if gcc is None:
        _unavailable("gcc not found (apt-get install gcc)")
    assert gcc is not None
    missing = [h for h in HEADERS if not Path("/usr/include", h).exists()]
    if missing:
        _unavailable(f"kernel uapi headers missing: {', '.join(missing)} "
                     "(apt-get install linux-libc-dev)")
    d = tmp_path_factory.mktemp("abi")
    (d / "abi.c").write_text(PROGRAM)
    subprocess.run([gcc, "-std=c11", "-Wall", "-Werror", "-o", str(d / "abi"), str(d / "abi.c")],
                   check=True, capture_output=True, timeout=30)
    out = subprocess.run([str(d / "abi")], check=True, capture_output=True, text=True, timeout=10)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _layout(struct: type[ctypes.Structure | ctypes.Union]) -> dict[str, list[int]]:
    return {name: [getattr(struct, name).offset, getattr(struct, name).size]
            for name, *_ in struct._fields_}


@pytest.mark.parametrize(("c_name", "py"), [
    ("struct i2c_msg", abi.I2cMsg),
    ("struct i2c_rdwr_ioctl_data", abi.I2cRdwrIoctlData),
    ("union i2c_smbus_data", abi.I2cSmbusData),
    ("struct i2c_smbus_ioctl_data", abi.I2cSmbusIoctlData),
    ("struct spi_ioc_transfer", abi.SpiIocTransfer),
])
def test_struct_layout_matches_kernel_header(
    kernel_abi: dict[str, object], c_name: str, py: type[ctypes.Structure]
) -> None:
    assert kernel_abi[f"sizeof {c_name}"] == ctypes.sizeof(py)
    header = {k.split(".", 1)[1]: v for k, v in kernel_abi.items()
              if k.startswith(f"{c_name}.")}
    assert header == _layout(py)


def test_ioctl_numbers_and_flags_match_kernel_header(kernel_abi: dict[str, object]) -> None:
    names = [k for k in kernel_abi if k.isupper() and not k.startswith("SPI_IOC_MESSAGE")]
    assert len(names) > 60
    ours = {n: getattr(abi, n, None) if hasattr(abi, n) else getattr(hs, n, None) for n in names}
    assert ours == {n: kernel_abi[n] for n in names}


def test_spi_ioc_message_numbers_match_kernel_macro(kernel_abi: dict[str, object]) -> None:
    # 1..600 crosses SPI_MSGSIZE's limit (511 transfers), where the size field becomes 0.
    for n in range(1, 601):
        assert abi.SPI_IOC_MESSAGE(n) == kernel_abi[f"SPI_IOC_MESSAGE({n})"], n
    assert abi.SPI_IOC_MESSAGE(abi.SPI_IOC_MAX_TRANSFERS) != abi.SPI_IOC_MESSAGE(
        abi.SPI_IOC_MAX_TRANSFERS + 1)


def test_filled_structs_are_byte_identical_to_c(kernel_abi: dict[str, object]) -> None:
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("the byte images use 64-bit pointer values")
    t = abi.SpiIocTransfer(0x1122334455667788, 0x99AABBCCDDEEFF01, 0x01020304, 0x05060708,
                           0x090A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0)
    assert bytes(t).hex() == kernel_abi["bytes spi_ioc_transfer"]
    m = abi.I2cMsg(0x0A50, abi.I2C_M_RD | abi.I2C_M_TEN, 0x1234, 0x0102030405060708)
    assert bytes(m).hex() == kernel_abi["bytes i2c_msg"]
    r = abi.I2cRdwrIoctlData(0x1112131415161718, 0x2A)
    assert bytes(r).hex() == kernel_abi["bytes i2c_rdwr_ioctl_data"]
    s = abi.I2cSmbusIoctlData(abi.I2C_SMBUS_READ, 0xAB, abi.I2C_SMBUS_PROC_CALL,
                              0x2122232425262728)
    assert bytes(s).hex() == kernel_abi["bytes i2c_smbus_ioctl_data"]
    d = abi.I2cSmbusData()
    d.word = 0xBEEF
    assert bytes(d).hex() == kernel_abi["bytes i2c_smbus_data.word"]
