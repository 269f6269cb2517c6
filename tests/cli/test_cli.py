"""The busbridge CLI against a real server (server_thread), plus real subprocesses."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import Result
from conftest import ROOT, cli_env, cli_runner, serve_process

import bridge.cli.info
from bridge.cli.i2ctools import I2CArgError, parse_set_args
from bridge.cli.main import cli, main

if TYPE_CHECKING:
    from conftest import Running



pytestmark = pytest.mark.usefixtures("restore_busbridge_logging")


def bb(srv: Running | None, *args: str, input: str | None = None) -> Result:
    url = ["--connect", srv.url] if srv is not None else []
    return cli_runner().invoke(cli, [*url, *args], input=input)


def ok(srv: Running, *args: str) -> str:
    r = bb(srv, *args)
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r.stdout


def fails(srv: Running | None, code: int, *args: str) -> str:
    r = bb(srv, *args)
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stderr


# ---------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------


def test_info_text(server_thread: Running) -> None:
    out = ok(server_thread, "info")
    assert "board:   busbridge-sim" in out
    assert "i2c bus 1" in out
    assert "i2c bus 2" in out
    assert "spi bus 0" in out
    assert "10BIT_ADDR" in out
    assert "SMBUS_QUICK" in out
    assert "SPI modes 0 1 2 3" in out
    assert "max frequency  50 MHz" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_info_json(server_thread: Running) -> None:
    data = json.loads(ok(server_thread, "info", "--json"))
    assert data["board"] == "busbridge-sim"
    assert [b["name"] for b in data["i2c"]] == ["1", "2"]
    assert "I2C" in data["i2c"][0]["functionality_names"]
    spi = data["spi"][0]
    assert spi["chip_selects"] == 2
    assert spi["max_freq_hz"] == 50_000_000
    assert spi["bits_per_word"] == [8, 16, 32]
    assert spi["config"]["cs_max_number"] == 2
    assert data["limits"]["max_requests"] > 0


# ---------------------------------------------------------------------------
# i2c detect
# ---------------------------------------------------------------------------


def test_detect_grid_bus_1(server_thread: Running) -> None:
    lines = ok(server_thread, "i2c", "detect", "-y", "1").splitlines()
    assert lines[0] == "     0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f"
    assert lines[5] == "40: 40 -- -- -- 44 -- -- -- 48 -- -- -- -- -- -- -- "
    assert lines[6] == "50: 50 -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- "
    cells = [c for line in lines[1:] for c in re.findall(r"([0-9a-f-]{2}) ", line[4:])]
    found = ["20", "3c", "40", "44", "48", "50", "68", "76"]  # the default board's bus 1
    assert sorted(c for c in cells if c != "--") == found
    assert cells.count("--") == 0x70 - len(found)


def test_detect_all_and_range(server_thread: Running) -> None:
    lines = ok(server_thread, "i2c", "detect", "-y", "-a", "2").splitlines()
    assert lines[1] == "00: " + "-- " * 16
    assert "18 " in lines[2]
    assert "48 " in lines[5]
    lines = ok(server_thread, "i2c", "detect", "-y", "-q", "1", "0x48", "0x50").splitlines()
    assert lines[5] == "40: " + "   " * 8 + "48 " + "-- " * 7
    assert lines[6] == "50: 50 " + "   " * 15


def test_detect_functionality(server_thread: Running) -> None:
    out = ok(server_thread, "i2c", "detect", "-F", "1")
    assert "I2C                              yes" in out
    assert "10-bit addressing                yes" in out


def test_detect_usage_errors(server_thread: Running) -> None:
    assert "different modes" in fails(server_thread, 2, "i2c", "detect", "-y", "-q", "-r", "1")
    assert "FIRST" in fails(server_thread, 2, "i2c", "detect", "-y", "1", "0x02", "0x10")


def test_detect_prompt_can_be_declined(server_thread: Running) -> None:
    r = bb(server_thread, "i2c", "detect", "1", input="n\n")
    assert r.exit_code == 0
    assert r.stdout == ""
    assert "Continue? [Y/n]" in r.stderr
    assert "Aborting on user request." in r.stderr


# ---------------------------------------------------------------------------
# i2c get / set
# ---------------------------------------------------------------------------


def test_get_modes_against_tmp117(server_thread: Running) -> None:
    assert ok(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f") == "0x01\n"
    assert ok(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", "b") == "0x01\n"
    # SMBus word order is little-endian: the big-endian 0x0117 prints as i2cget does.
    assert ok(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", "w") == "0x1701\n"
    assert ok(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", "c") == "0x01\n"
    # Current address: the pointer stays at 0x0f; a 1-byte read gets its high byte.
    assert ok(server_thread, "i2c", "get", "-y", "1", "0x48") == "0x01\n"
    out = ok(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", "i", "4")
    assert out == "0x01 0x17 0x01 0x17\n"  # no auto-increment: the register repeats


def test_get_word_reads_in_one_combined_transaction(server_thread: Running) -> None:
    ok(server_thread, "i2c", "get", "-y", "1", "0x48", "0x0f", "w")
    entry = server_thread.board.i2c["1"].log_snapshot()[-1]  # type: ignore[attr-defined]
    assert entry.describe() == ["w1@0x48 0f", "r2@0x48 -> 01 17"]


def test_get_i2c_bus_name_alias(server_thread: Running) -> None:
    assert ok(server_thread, "i2c", "get", "-y", "i2c-1", "0x48", "0x0f", "w") == "0x1701\n"


def test_get_usage_errors(server_thread: Running) -> None:
    assert "PEC" in fails(server_thread, 2, "i2c", "get", "-y", "1", "0x48", "0x0f", "wp")
    assert "I2C_M_RECV_LEN" in fails(server_thread, 2, "i2c", "get", "-y", "1", "0x48", "0", "s")
    assert "invalid mode" in fails(server_thread, 2, "i2c", "get", "-y", "1", "0x48", "0", "x")
    assert "data address" in fails(server_thread, 2, "i2c", "get", "-y", "1", "0x48", "0x100")
    assert "LENGTH" in fails(server_thread, 2, "i2c", "get", "-y", "1", "0x48", "0", "b", "4")


def test_set_then_get(server_thread: Running) -> None:
    assert ok(server_thread, "i2c", "set", "-y", "1", "0x48", "0x02", "0x1234", "w") == ""
    assert ok(server_thread, "i2c", "get", "-y", "1", "0x48", "0x02", "w") == "0x1234\n"
    # i2cset word order on the wire: low byte first, so the big-endian register holds 0x3412.
    tmp117 = server_thread.board.i2c["1"].device(0x48).model  # type: ignore[attr-defined]
    assert tmp117.peek(0x02) == 0x3412


def test_set_byte_is_one_write_message(server_thread: Running) -> None:
    assert ok(server_thread, "i2c", "set", "-y", "2", "0x48", "0x01", "0x06") == ""
    entry = server_thread.board.i2c["2"].log_snapshot()[-1]  # type: ignore[attr-defined]
    assert entry.describe() == ["w2@0x48 01 06"]
    assert ok(server_thread, "i2c", "get", "-y", "2", "0x48", "0x01") == "0x06\n"


def test_set_readback_and_mask(server_thread: Running) -> None:
    out = ok(server_thread, "i2c", "set", "-y", "-r", "1", "0x48", "0x03", "0x5678", "w")
    assert out == "Value 0x5678 written, readback matched\n"
    out = ok(server_thread, "i2c", "set", "-y", "-m", "0x00ff", "-r", "1", "0x48", "0x03",
             "0xaaaa", "w")
    assert out == "Value 0x56aa written, readback matched\n"
    # A read-only register keeps its value: -r reports the mismatch.
    out = ok(server_thread, "i2c", "set", "-y", "-r", "1", "0x48", "0x0f", "0x0000", "w")
    assert out == "Warning - data mismatch - wrote 0x0000, read back 0x1701\n"


def test_set_block_and_short_write(server_thread: Running) -> None:
    # EEPROM: a "register" write of [0x00, 0x20, data...] is a 2-byte address + data.
    ok(server_thread, "i2c", "set", "-y", "1", "0x50", "0x00", "0x20", "0x61", "0x62", "i")
    ok(server_thread, "i2c", "set", "-y", "1", "0x50", "0x00", "0x20", "b")  # address only
    assert ok(server_thread, "i2c", "get", "-y", "1", "0x50") == "0x61\n"


def test_set_prompt_defaults_like_i2cset(server_thread: Running) -> None:
    r = bb(server_thread, "i2c", "set", "1", "0x48", "0x02", "0x00", input="n\n")
    assert r.exit_code == 0
    assert "Continue? [Y/n]" in r.stderr
    assert "Aborting on user request." in r.stderr
    tmp117 = server_thread.board.i2c["1"].device(0x48).model  # type: ignore[attr-defined]
    assert tmp117.peek(0x02) == 0x6000  # untouched
    # EEPROM addresses default to no, with i2cset's warning.
    r = bb(server_thread, "i2c", "set", "1", "0x50", "0x00", "0x00", input="\n")
    assert r.exit_code == 0
    assert "DANGEROUS!" in r.stderr
    assert "Continue? [y/N]" in r.stderr
    assert "Aborting on user request." in r.stderr
    assert server_thread.board.i2c["1"].log_snapshot() == []  # type: ignore[attr-defined]


def test_set_short_write_with_readback(server_thread: Running) -> None:
    # Mode c sends REG alone; the TMP117 takes it as its pointer, so reading back one
    # byte returns that register's high byte, not the value: i2cset reports the mismatch.
    out = ok(server_thread, "i2c", "set", "-y", "-r", "1", "0x48", "0x0f", "c")
    assert out == "Warning - data mismatch - wrote 0x0f, read back 0x01\n"
    entry = server_thread.board.i2c["1"].log_snapshot()[-2]  # type: ignore[attr-defined]
    assert entry.describe() == ["w1@0x48 0f"]


def test_set_args_parsing() -> None:
    assert parse_set_args(["0x12"]) == ([0x12], "b")
    assert parse_set_args([]) == ([], "c")
    assert parse_set_args(["0x1234", "w"]) == ([0x1234], "w")
    assert parse_set_args(["1", "2", "3", "i"]) == ([1, 2, 3], "i")
    for bad, match in ((["1", "2"], "mode 'i'"), (["0x100"], "out of range"),
                       (["1", "c"], "no value"), (["1", "bp"], "PEC"), (["1", "s"], "'i'")):
        with pytest.raises(I2CArgError, match=match):
            parse_set_args(bad)


# ---------------------------------------------------------------------------
# i2c transfer
# ---------------------------------------------------------------------------


def test_transfer_register_read(server_thread: Running) -> None:
    assert ok(server_thread, "i2c", "transfer", "-y", "1", "w1@0x48", "0x0f", "r2") == \
        "0x01 0x17\n"


def test_transfer_verbose(server_thread: Running) -> None:
    out = ok(server_thread, "i2c", "transfer", "-y", "-v", "1", "w1@0x48", "0x0f", "r2")
    assert out.splitlines() == [
        "msg 0: addr 0x48, write, len 1, buf 0x0f",
        "msg 1: addr 0x48, read, len 2, buf 0x01 0x17",
    ]


def test_transfer_suffixes_write_the_eeprom(server_thread: Running) -> None:
    assert ok(server_thread, "i2c", "transfer", "-y", "1", "w10@0x50", "0x00", "0x40",
              "0xa0+") == ""
    assert ok(server_thread, "i2c", "transfer", "-y", "1", "w6@0x50", "0x00", "0x48",
              "0x5a=") == ""
    out = ok(server_thread, "i2c", "transfer", "-y", "1", "w2@0x50", "0x00", "0x40", "r12")
    assert out == "0xa0 0xa1 0xa2 0xa3 0xa4 0xa5 0xa6 0xa7 0x5a 0x5a 0x5a 0x5a\n"
    eeprom = server_thread.board.i2c["1"].device(0x50)  # type: ignore[attr-defined]
    assert bytes(eeprom.memory[0x40:0x4C]) == bytes(range(0xA0, 0xA8)) + b"\x5a" * 4


def test_transfer_several_reads_print_one_line_each(server_thread: Running) -> None:
    out = ok(server_thread, "i2c", "transfer", "-y", "1", "w1@0x48", "0x0f", "r2",
             "w1", "0x01", "r2")
    assert out == "0x01 0x17\n0x22 0x20\n"  # configuration 0x0220 with Data_Ready set


def test_transfer_ten_bit(server_thread: Running) -> None:
    assert ok(server_thread, "i2c", "transfer", "-y", "2", "w1@t0x2a5", "0x00", "r1") == "0xa5\n"


@pytest.mark.parametrize("args", [
    ("i2c", "transfer", "-y", "2", "w1@0x2a5", "0x00", "r1"),
    ("i2c", "transfer", "-y", "1", "r2@0x90"),
    ("lease", "take", "i2c:1@0x90"),
    ("run", "--lease", "i2c:1@0x90", "--", "true"),
])
def test_an_address_above_0x7f_needs_the_explicit_10_bit_form(server_thread: Running,
                                                               args: tuple[str, ...]) -> None:
    """Issue 17 item 12: an 8-bit-address slip must not silently become a 10-bit address,
    in i2c transfer as in lease scopes; nothing reaches the board."""
    err = fails(server_thread, 2, *args)
    assert err.splitlines()[-1].startswith("busbridge: error: ")
    assert "is not a 7-bit address (0x00-0x7f)" in err
    if "0x90" in " ".join(args):
        assert "as an 8-bit address (R/W bit included) it is 7-bit 0x48" in err
        assert "@t0x090" in err
        assert ("i2c:1@t0x090" in err) == ("i2c:1@0x90" in args)
    assert server_thread.server.stats.totals()["requests"] == 0
    assert not server_thread.server.leases.snapshot()


def test_the_explicit_10_bit_form_leases_and_i2c_get_points_to_it(server_thread: Running
                                                                   ) -> None:
    out = ok(server_thread, "lease", "take", "i2c:2@t0x2a5", "--json")
    assert json.loads(out)["lease"]["address"] == 0x2A5
    err = fails(server_thread, 2, "i2c", "get", "-y", "1", "0x90", "0x00")
    assert "it is 7-bit 0x48" in err
    assert "10-bit addresses: i2c transfer with @t0x..." in err


def test_transfer_prompt(server_thread: Running) -> None:
    r = bb(server_thread, "i2c", "transfer", "1", "w1@0x48", "0x0f", "r2", input="y\n")
    assert r.exit_code == 0
    assert r.stdout == "0x01 0x17\n"
    assert "msg 0: addr 0x48, write, len 1, buf 0x0f" in r.stderr
    r = bb(server_thread, "i2c", "transfer", "1", "w1@0x48", "0x0f", "r2", input="")
    assert r.exit_code == 0
    assert r.stdout == ""
    assert "Aborting" in r.stderr


def test_transfer_usage_errors(server_thread: Running) -> None:
    assert "no address given" in fails(server_thread, 2, "i2c", "transfer", "-y", "1", "r2")
    assert "incomplete" in fails(server_thread, 2, "i2c", "transfer", "-y", "1", "w2@0x50", "0")
    assert "protocol mangling" in fails(server_thread, 2, "i2c", "transfer", "-y", "1",
                                        "pr1@0x50")


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_nack_names_bus_address_and_message(server_thread: Running) -> None:
    err = fails(server_thread, 1, "i2c", "transfer", "-y", "1", "w1@0x48", "0x0f", "r2@0x51")
    assert err.startswith("busbridge: error: i2c bus 1, message 1 (r2@0x51): ")
    assert "no ACK" in err
    assert err.count("\n") == 1
    err = fails(server_thread, 1, "i2c", "get", "-y", "1", "0x51", "0x00")
    assert err.startswith("busbridge: error: i2c bus 1, message 0 (w1@0x51)")


def test_unknown_bus(server_thread: Running) -> None:
    err = fails(server_thread, 1, "i2c", "get", "-y", "9", "0x48", "0x0f")
    assert err.startswith("busbridge: error: no I2C bus '9'")
    assert "'1', '2'" in err
    err = fails(server_thread, 1, "i2c", "detect", "-y", "9")
    assert err.count("\n") == 1
    assert "no I2C bus '9'" in err
    assert "no SPI bus '7'" in fails(server_thread, 1, "spi", "transfer", "7", "0", "00")


@pytest.mark.parametrize("addr", ["0x02", "0x78", "0x2a5", "banana"])
def test_invalid_address_is_a_usage_error(server_thread: Running, addr: str) -> None:
    err = fails(server_thread, 2, "i2c", "get", "-y", "1", addr, "0x00")
    assert "chip address" in err


def test_all_addresses_flag(server_thread: Running) -> None:
    # 0x02 is allowed with -a; nothing answers there, so it is a NACK, not a usage error.
    err = fails(server_thread, 1, "i2c", "get", "-y", "-a", "1", "0x02")
    assert "0x02" in err
    assert "no ACK" in err


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli_runner().invoke(cli, ["--connect", f"127.0.0.1:{port}", "info"])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"busbridge: error: cannot connect to 127.0.0.1:{port}: ")
    assert "Traceback" not in r.stderr


def test_bad_connect_option() -> None:
    r = cli_runner().invoke(cli, ["--connect", "host:notaport", "info"])
    assert r.exit_code == 2
    assert "--connect" in r.stderr


def test_env_var_gives_the_server(server_thread: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUSBRIDGE_URL", server_thread.url)
    r = cli_runner().invoke(cli, ["i2c", "get", "-y", "1", "0x48", "0x0f", "w"])
    assert r.exit_code == 0
    assert r.stdout == "0x1701\n"


# ---------------------------------------------------------------------------
# spi
# ---------------------------------------------------------------------------


def test_spi_jedec_id(server_thread: Running) -> None:
    # Byte 0 is clocked in during the opcode: nothing drives MISO, it reads 0xff.
    assert ok(server_thread, "spi", "transfer", "0", "0", "9f000000") == "ff ef 40 16\n"
    assert ok(server_thread, "spi", "transfer", "0", "0", "9f", "00", "00", "00") == \
        "ff ef 40 16\n"
    assert ok(server_thread, "spi", "transfer", "0", "0", "0x9f", "0x00", "0x00", "0x00") == \
        "ff ef 40 16\n"


def test_spi_program_and_read_back_with_rx(server_thread: Running) -> None:
    ok(server_thread, "spi", "transfer", "0", "0", "06")  # WREN
    ok(server_thread, "spi", "transfer", "0", "0", "02001000", "11223344")  # page program
    assert ok(server_thread, "spi", "transfer", "0", "0", "05", "00") == "ff 00\n"  # not busy
    out = ok(server_thread, "spi", "transfer", "0", "0", "03001000", "--rx", "4")
    assert out == "11 22 33 44\n"
    entry = server_thread.board.spi["0"].log_snapshot()[-1]  # type: ignore[attr-defined]
    assert len(entry.transfers) == 2  # one message: the write, then the read, CS held


def test_spi_loopback_options(server_thread: Running) -> None:
    out = ok(server_thread, "spi", "transfer", "--speed", "1000000", "--mode", "3",
             "--delay-us", "5", "0", "1", "deadbeef")
    assert out == "de ad be ef\n"
    head = server_thread.board.spi["0"].log_snapshot()[-1].transfers[0].head  # type: ignore[attr-defined]
    assert (head.freq, head.mode, head.cs_delay_hold_ns) == (1_000_000, 3, 5000)


def test_spi_param_err(server_thread: Running) -> None:
    err = fails(server_thread, 1, "spi", "transfer", "--speed", "60000000", "0", "0", "9f000000")
    assert err.startswith("busbridge: error: spi bus 0 cs 0, transfer 0: ")
    assert "above max 50000000" in err
    err = fails(server_thread, 1, "spi", "transfer", "--bits", "16", "0", "1", "010203")
    assert "16-bit words" in err


def test_spi_usage_errors(server_thread: Running) -> None:
    assert "odd number" in fails(server_thread, 2, "spi", "transfer", "0", "0", "9f0")
    assert "--rx" in fails(server_thread, 2, "spi", "transfer", "0", "0")


# ---------------------------------------------------------------------------
# main(): exit codes without tracebacks
# ---------------------------------------------------------------------------


def test_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "0.1.0" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["i2c", "get", "-y", "1", "0x02"])
    assert e.value.code == 2
    assert "out of range" in capsys.readouterr().err


def test_main_is_quiet_on_ctrl_c(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*_a: Any, **_k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(bridge.cli.info, "with_client", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["info"])
    assert e.value.code == 130
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------


def test_demo_subprocess() -> None:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "bridge.cli", "demo"], capture_output=True,
                       text=True, timeout=60, env=cli_env(), cwd=ROOT)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = p.stdout
    assert "0x48 0x50" in out  # bus 1 scan
    assert "0x0117" in out
    assert "ef 40 16: Winbond W25Q32" in out
    assert "'hello, busbridge' matches" in out
    assert "ENXIO" in out
    assert "0x51" in out
    assert "p50" in out
    assert "req/s" in out
    assert "All 14 steps behaved as expected" in out
    assert "FAIL" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert p.stderr == ""  # the server's lifecycle logs are hidden without -v
    assert time.monotonic() - t0 < 20


def test_serve_subprocess_info_then_sigterm() -> None:
    with serve_process() as serve:
        m = serve.wait_for(r"^busbridge: serving board 'busbridge-sim' on "
                           r"127\.0\.0\.1:(\d+) \(i2c: 1, 2; spi: 0\)\n\Z", timeout=20)
        url = f"127.0.0.1:{m.group(1)}"
        info = subprocess.run([sys.executable, "-m", "bridge.cli", "--connect", url, "info"],
                              capture_output=True, text=True, timeout=30, env=cli_env(), cwd=ROOT)
        assert info.returncode == 0, info.stderr
        assert "board:   busbridge-sim" in info.stdout
        assert serve.stop(timeout=20) == 0


def test_serve_config_error_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[i2c]]\nname = "1"\nbackend = "nope"\n')
    r = cli_runner().invoke(cli, ["serve", "--config", str(bad)])
    assert r.exit_code == 2
    assert r.stderr.startswith(f"busbridge: error: invalid board config {bad}:")
    r = cli_runner().invoke(cli, ["serve", "--config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2
    assert "missing.toml" in r.stderr
    assert "cannot read" in r.stderr


def test_serve_record_and_replay_option_errors(tmp_path: Path) -> None:
    r = cli_runner().invoke(cli, ["serve", "--replay", "x.bbrec", "--config", "b.toml"])
    assert r.exit_code == 2
    assert "give it or --config, not both" in r.stderr
    r = cli_runner().invoke(cli, ["serve", "--listen", "127.0.0.1:0", "--record",
                               str(tmp_path / "no" / "dir.bbrec")])
    assert r.exit_code == 1
    assert r.stderr == (f"busbridge: error: cannot write recording {tmp_path}/no/dir.bbrec: "
                        "No such file or directory\n")
    r = cli_runner().invoke(cli, ["serve", "--listen", "127.0.0.1:0", "--record", "/dev/full"])
    assert r.exit_code == 1
    assert "cannot write recording /dev/full: No space left on device" in r.stderr
    r = cli_runner().invoke(cli, ["serve", "--replay", str(tmp_path / "missing.bbrec")])
    assert r.exit_code == 2
    assert "cannot read recording" in r.stderr


def test_serve_bad_listen_is_a_usage_error() -> None:
    r = cli_runner().invoke(cli, ["serve", "--listen", "nowhere"])
    assert r.exit_code == 2
    assert "--listen" in r.stderr
