"""The attacks of issue 14's review, each with a legitimate client alongside; prints a table.

Each attack runs ``busbridge serve`` in a subprocess (descriptor limit 1,024, what a
systemd service gets by default) on a board file that any version of the server
reads, so the same suite measures the code before the fixes too::

    python tests/reliability/attack_suite.py                  # this tree
    python tests/reliability/attack_suite.py --src OLD_TREE   # another checkout's server

(the attackers and the legitimate client are always this tree's).  The pytest
wrapper, tests/reliability/test_attacks.py, asserts the targets; this prints.
Every loop is bounded in count and time; all traffic is on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE.parent)]

from bridge.client import (  # noqa: E402
    BlockingClient,
    Client,
    ClientAuth,
    RemoteError,
    read,
    spi_xfer,
    write,
)
from bridge.server.auth import hash_token  # noqa: E402
from protocol.virtio import I2C_FLAGS_M_RD, I2C_OUT_HDR, encode_i2c_addr  # noqa: E402
from reliability.attacks import (  # noqa: E402
    Probe,
    Swarm,
    connect_from,
    frame,
    hello,
    read_frame,
    rss_kib,
    sources,
)

ADMIN, CI, NOBODY = "admin-" + "a" * 40, "ci-" + "c" * 40, "nobody-" + "n" * 40
#: Characters no log or terminal line may carry raw.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")

BOARD = """
name = "attack-board"

[server]
request_timeout_ms = 2000

[[server.tokens]]
name = "admin"
hash = "{admin}"

[[server.tokens]]
name = "ci"
hash = "{ci}"

[[server.tokens]]
name = "nobody"
hash = "{nobody}"

[[server.access]]
client = "admin"
bus = "*"

[[server.access]]
client = "ci"
bus = "spi:0"
chip_selects = [0]
access = "read-only"

[[server.access]]
client = "ci"
bus = "i2c:2"
addresses = ["0x50"]

{tls}

[[i2c]]
name = "1"
backend = "sim"
log_size = 0
[[i2c.devices]]
type = "regmap"
name = "tmp117"
address = 0x48
pointer_bits = 8
value_bits = 16
endian = "big"
auto_increment = false
registers = {{ 0x0F = 0x0117 }}
[[i2c.devices]]
type = "eeprom"
name = "24c32"
address = 0x50
size = 4096
page_size = 32
address_bytes = 2

[[i2c]]
name = "2"
backend = "sim"
log_size = 0
[[i2c.devices]]
type = "regmap"
name = "seven"
address = 0x50
registers = {{ 0x00 = 0x07 }}
[[i2c.devices]]
type = "regmap"
name = "ten"
address = 0x050
ten_bit = true
registers = {{ 0x00 = 0x0a }}

[[spi]]
name = "0"
backend = "sim"
cs_max_number = 2
log_size = 0
[[spi.devices]]
type = "spi_regmap"
cs = 0
registers = {{ 0 = 0x11, 1 = 0x22, 2 = 0x33, 3 = 0x44 }}
[[spi.devices]]
type = "loopback"
cs = 1
"""


@dataclass
class Row:
    attack: str
    probe: Probe
    rss: tuple[int, int, int]  # KiB: before, peak during, after
    note: str
    connects: bool = False  # the legitimate client connects anew for each request
    #: The attack got nothing it should not have (device untouched, log clean...).
    ok: bool = True

    def cells(self) -> list[str]:
        b, d, a = (x / 1024 for x in self.rss)
        what = "connects" if self.connects else "requests"
        return [self.attack, f"{self.probe.served}/{self.probe.tried} {what}",
                f"{self.probe.p99_ms:.1f}", f"{b:.0f} / {d:.0f} / {a:.0f}", self.note]


@dataclass
class Lab:
    """Certificates, board files and the server under test."""

    dir: Path
    src: Path
    certs: dict[str, Path] = field(default_factory=dict)

    def make_certs(self) -> None:
        ca, client_ca = trustme.CA(), trustme.CA()
        ca.cert_pem.write_to_path(str(self.dir / "ca.pem"))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(self.dir / "server.pem"))
        client_ca.cert_pem.write_to_path(str(self.dir / "client-ca.pem"))
        client_ca.issue_cert("admin@lab", common_name="admin") \
            .private_key_and_cert_chain_pem.write_to_path(str(self.dir / "admin.pem"))
        self.certs = {k: self.dir / f"{k}.pem" for k in ("ca", "server", "client-ca", "admin")}

    def board(self, tls: bool) -> Path:
        section = ""
        if tls:
            section = (f'[server.tls]\ncert = "{self.certs["server"]}"\n'
                       f'key = "{self.certs["server"]}"\nclient_ca = "{self.certs["client-ca"]}"\n')
        path = self.dir / ("board-tls.toml" if tls else "board.toml")
        path.write_text(BOARD.format(admin=hash_token(ADMIN), ci=hash_token(CI),
                                     nobody=hash_token(NOBODY), tls=section))
        return path

    @contextlib.contextmanager
    def serve(self, tls: bool = False, verbose: bool = False) -> Iterator[Server]:
        port = _free_port()
        err = self.dir / f"serve-{port}.log"
        env = {**os.environ, "PYTHONPATH": str(self.src)}
        args = [sys.executable, "-c", "from bridge.cli.main import main; main()",
                *(["-v"] if verbose else []), "serve", "--config", str(self.board(tls)),
                "--listen", f"127.0.0.1:{port}"]
        with open(err, "w") as log:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log,
                                    stdin=subprocess.DEVNULL, env=env, cwd=self.dir,
                                    preexec_fn=_nofile_1024)
        server = Server(proc, port, err)
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, err.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the server did not listen"
                    time.sleep(0.05)
            yield server
        finally:
            server.stop()

    def auth(self, tls: bool, token: str = ADMIN) -> ClientAuth:
        if tls:
            return ClientAuth(cafile=str(self.certs["ca"]), certfile=str(self.certs["admin"]))
        return ClientAuth(token=token)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    peak: int = 0
    _sampler: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss(self) -> int:
        try:
            return rss_kib(self.proc.pid)
        except (OSError, RuntimeError):
            return 0

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        """Track the peak RSS every 50 ms for the block."""
        self.peak = self.rss()
        self._stop.clear()

        def sample() -> None:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, self.rss())

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield
        finally:
            self._stop.set()
            t.join(5)

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nofile_1024() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, max(1024, hard)))


@contextlib.contextmanager
def forked(fn: Callable[[], Any], timeout: float = 180) -> Iterator[Callable[[], Any]]:
    """Run the attacker ``fn`` in a child process (so it does not share this process's GIL
    with the legitimate client); the block gets a function that waits for its result."""
    ctx = multiprocessing.get_context("fork")
    q: Any = ctx.Queue()
    proc = ctx.Process(target=lambda: q.put(fn()), daemon=True)
    proc.start()
    got: list[Any] = []

    def result() -> Any:
        if not got:
            got.append(q.get(timeout=timeout))
        return got[0]

    try:
        yield result
    finally:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(10)


def tmp_id(c: BlockingClient) -> None:
    (data,) = c.transfer("1", [write(0x48, [0x0F]), read(0x48, 2)])
    assert data == b"\x01\x17", data


def settle(server: Server, seconds: float = 1.5) -> int:
    time.sleep(seconds)
    return server.rss()


def probe_requests(lab: Lab, server: Server, tls: bool, count: int, seconds: float,
                   call: Callable[[BlockingClient], object] = tmp_id) -> Probe:
    with BlockingClient("127.0.0.1", server.port, auth=lab.auth(tls), timeout=10) as c:
        return Probe().run(lambda: call(c), count, seconds)


def probe_connects(lab: Lab, server: Server, tls: bool, count: int, seconds: float) -> Probe:
    def once() -> None:
        with BlockingClient("127.0.0.1", server.port, auth=lab.auth(tls), timeout=3) as c:
            tmp_id(c)
    return Probe().run(once, count, seconds, pause=0.2)


# -- the attacks --------------------------------------------------------------------------


def spi_read_only(lab: Lab) -> Row:
    """Finding 1: receive-only transfers from a read-only client clocked 0x00 into a
    register map."""
    def regmap(c: BlockingClient) -> bytes:
        (rx,) = c.spi_transfer("0", 0, [spi_xfer([0x80, 0, 0, 0, 0])])
        return rx[1:]

    with lab.serve() as server:
        before = settle(server)
        def attack() -> int:
            denied = 0
            with BlockingClient("127.0.0.1", server.port, auth=ClientAuth(token=CI)) as ro:
                for _ in range(200):
                    try:
                        ro.spi_transfer("0", 0, [spi_xfer(None, 4)])
                    except RemoteError:
                        denied += 1
            return denied

        with server.sampling(), forked(attack) as result:
            probe = probe_requests(lab, server, False, 300, 20, lambda c: regmap(c))
            denied = result()
        with BlockingClient("127.0.0.1", server.port, auth=lab.auth(False)) as c:
            regs = regmap(c)
        after = settle(server, 0.5)
    untouched = regs == bytes([0x11, 0x22, 0x33, 0x44])
    return Row("1 read-only SPI, 200 receive-only transfers", probe,
               (before, server.peak, after),
               f"regmap {regs.hex(' ')} ({'untouched' if untouched else 'CHANGED'}); "
               f"{denied}/200 denied", ok=untouched and denied == 200)


def tls_idle(lab: Lab) -> Row:
    """Finding 2: 1,100 TCP connections that never start TLS, against the descriptor limit."""
    with lab.serve(tls=True) as server:
        before = settle(server)
        with server.sampling(), Swarm(server.port, 100, sources(11)) as swarm:
            time.sleep(3.0)  # all of them in: the probe runs while they hold on
            probe = probe_connects(lab, server, True, 20, 40)
        after = settle(server, 2.0)
    return Row(f"2 {swarm.opened} idle TCP, no TLS (nofile 1024)", probe,
               (before, server.peak, after), f"{swarm.refused} attacker connects failed",
               connects=True)


def squatters(lab: Lab) -> Row:
    """Finding 3: connections without HELLO from six addresses, reopened when closed."""
    with lab.serve() as server:
        before = settle(server)
        with server.sampling(), Swarm(server.port, 50, sources(6), churn=True,
                                      seconds=40) as swarm:
            time.sleep(1.0)
            probe = probe_connects(lab, server, False, 20, 40)
        after = settle(server, 2.0)
        warnings = sum(1 for x in server.log_lines() if "level=warning" in x)
    return Row(f"3 squatters: {swarm.opened} opened, never HELLO", probe,
               (before, server.peak, after), f"{warnings} WARNING lines", connects=True,
               ok=warnings <= 300)


def lease_stack(lab: Lab) -> Row:
    """Finding 4: one client takes the same address lease 6,000 times."""
    with lab.serve() as server:
        before = settle(server)
        listed = "?"
        def attack() -> tuple[int, float]:
            refused = 0
            t0 = time.perf_counter()
            with socket.create_connection(("127.0.0.1", server.port)) as ci:
                ci.sendall(hello("stacker", CI))
                read_frame(ci)  # WELCOME
                for k in range(6000):
                    ci.sendall(frame([8, k + 1, "take", {"kind": "i2c", "bus": "2",
                                                         "address": 0x50, "ttl": 600,
                                                         "holder": "stacker"}]))
                    got = read_frame(ci, 30)
                    if got is None or got[0] != 9:
                        refused += 1
            return refused, time.perf_counter() - t0

        with server.sampling(), forked(attack) as result:
            probe = probe_requests(lab, server, False, 300, 30)
            refused, took = result()
            with Client("127.0.0.1", server.port, auth=lab.auth(False)) as c:
                try:
                    listed = f"lease list: {len(c.leases())} lease(s)"
                except RemoteError as e:
                    listed = f"lease list FAILED ({e.code})"
        after = settle(server, 0.5)
    return Row("4 one scope taken 6,000 times", probe, (before, server.peak, after),
               f"{listed}; takes {took:.1f} s, {refused} refused",
               ok=listed == "lease list: 1 lease(s)")


def bogus_buses(lab: Lab, frames: int = 200_000) -> Row:
    """Finding 5: denied frames naming 200,000 different buses, from a token with no rights."""
    hdr = I2C_OUT_HDR.pack(encode_i2c_addr(0x48, False), 0, I2C_FLAGS_M_RD)
    with lab.serve() as server:
        before = settle(server)
        def attack() -> int:
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(hello("flooder", NOBODY))
            assert read_frame(s) is not None
            answered = 0

            def drain() -> None:
                nonlocal answered
                s.settimeout(30)
                buf = b""
                while answered < frames:
                    try:
                        chunk = s.recv(1 << 20)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                    while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                        buf = buf[4 + int.from_bytes(buf[:4], "big"):]
                        answered += 1

            reader = threading.Thread(target=drain)
            reader.start()
            with contextlib.suppress(OSError):
                for k in range(0, frames, 1000):
                    s.sendall(b"".join(frame([2, j + 1, f"b{j:063d}", [[hdr, 1]], None])
                                       for j in range(k, k + 1000)))
            reader.join(120)
            s.close()
            return answered

        with server.sampling(), forked(attack) as result:
            probe = probe_requests(lab, server, False, 300, 60)
            answered = result()
        after = settle(server, 1.0)
        log = server.log.stat().st_size
    return Row(f"5 {frames:,} denied frames, distinct buses", probe,
               (before, server.peak, after), f"{answered:,} answered; log {log:,} bytes",
               ok=answered == frames and log < 100_000)


def never_read(lab: Lab, clients: int = 16, frames: int = 146) -> Row:
    """Finding 6: 16 clients each ask 146 frames of 31 x 8 KiB reads and never read."""
    hdr = I2C_OUT_HDR.pack(encode_i2c_addr(0x50, False), 0, I2C_FLAGS_M_RD)
    data = b"".join(frame([2, k + 1, "1", [[hdr, 8192]] * 31, None]) for k in range(frames))
    socks = []
    with lab.serve() as server:
        before = settle(server)
        with server.sampling():
            for _ in range(clients):
                s = socket.create_connection(("127.0.0.1", server.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                s.sendall(hello("hoarder", ADMIN))
                assert read_frame(s) is not None
                s.setblocking(False)
                socks.append(s)
            pending = {s: data for s in socks}
            deadline = time.monotonic() + 15
            while pending and time.monotonic() < deadline:
                for s, rest in list(pending.items()):
                    with contextlib.suppress(BlockingIOError):
                        rest = rest[s.send(rest):]
                    pending[s] = rest
                    if not rest:
                        del pending[s]
                time.sleep(0.01)
            time.sleep(1.0)
            probe = probe_requests(lab, server, False, 200, 30)
            during = server.rss()
        for s in socks:
            s.close()
        after = settle(server, 2.0)
    return Row(f"6 {clients} clients x {frames} x 31 x 8 KiB reads, never read", probe,
               (before, max(server.peak, during), after),
               f"{sum(len(r) for r in pending.values()):,} request bytes not taken")


def log_injection(lab: Lab) -> Row:
    """Finding 9: client names with CR, ESC, BEL, NUL, U+2028, NEL and a quoted level=error."""
    # One name that needs quoting anyway (a space, a quote), one that did not.
    names = ['x" level=error msg=forged\r\x1b[2J\x07\x00\u2028\x85 end',
             "x\r\x1b[2J\x07\x00\u2028\x85"]
    with lab.serve(verbose=True) as server:
        before = settle(server)
        with server.sampling():
            for k in range(50):  # from another address: wrong tokens lock it out
                with contextlib.suppress(OSError), connect_from("127.0.0.2", server.port) as s:
                    s.sendall(hello(names[k % 2], "wrong-" + "w" * 30))
                    read_frame(s)
            probe = probe_requests(lab, server, False, 300, 20)
        after = settle(server, 0.5)
        lines = server.log_lines()
    raw = sum(1 for x in lines if RAW.search(x))
    # A log line starts with ts= and has one level=; `serve` prints its banner itself.
    forged = sum(1 for x in lines if not x.startswith("busbridge: ")
                 and (not x.startswith("ts=") or len(re.findall(r"(?:^| )level=", x)) != 1))
    return Row("9 client names with control characters", probe, (before, server.peak, after),
               f"{raw} log lines with raw controls, {forged} split or forged",
               ok=raw == forged == 0)


def terminal_injection(lab: Lab) -> Row:
    """Finding 10: a lease holder that sets the title, clears the screen, poses as admin."""
    evil = "\x1b]0;pwned\x07\x1b[2J\rADMIN (ops on-call)"
    with lab.serve() as server:
        before = settle(server)
        # The CLI is the one of the tree under test: printing is its business.
        env = {**os.environ, "BUSBRIDGE_TOKEN": ADMIN, "PYTHONPATH": str(lab.src)}
        cli = [sys.executable, "-c", "from bridge.cli.main import main; main()",
               "--connect", f"127.0.0.1:{server.port}"]
        with server.sampling(), Client("127.0.0.1", server.port,
                                       auth=ClientAuth(token=CI)) as ci:
            ci.lease_take("2", 0x50, ttl=60, holder=evil)
            shown = subprocess.run([*cli, "lease", "list"], capture_output=True, text=True,
                                   env=env, timeout=60, cwd=lab.dir)
            busy = subprocess.run([*cli, "i2c", "get", "-y", "2", "0x50", "0x00"],
                                  capture_output=True, text=True, env=env, timeout=60,
                                  cwd=lab.dir)
            probe = probe_requests(lab, server, False, 300, 20)
        after = settle(server, 0.5)
    raw = sum(1 for out in (shown.stdout, busy.stderr) if RAW.search(out))
    named = "token:ci" in shown.stdout
    return Row("10 lease holder with terminal escapes", probe, (before, server.peak, after),
               f"{raw}/2 outputs with raw controls; identity shown: {named}",
               ok=raw == 0 and named)


def ten_bit_lease(lab: Lab) -> Row:
    """Finding 11: a 7-bit lease on 0x50 locked the 10-bit device 0x050."""
    def ten(c: BlockingClient) -> None:
        (data,) = c.transfer("2", [write(0x050, [0x00], ten_bit=True),
                                   read(0x050, 1, ten_bit=True)])
        assert data == b"\x0a", data

    with lab.serve() as server:
        before = settle(server)
        with server.sampling(), Client("127.0.0.1", server.port,
                                       auth=ClientAuth(token=CI)) as ci:
            ci.lease_take("2", 0x50, ttl=60)
            probe = probe_requests(lab, server, False, 300, 20, ten)
        after = settle(server, 0.5)
    return Row("11 7-bit lease 0x50, admin uses 10-bit 0x050", probe,
               (before, server.peak, after), "")


def wrong_tokens(lab: Lab, seconds: float = 5.0) -> Row:
    """Finding 12: wrong tokens as fast as one thread can send them, from 127.0.0.2."""
    with lab.serve() as server:
        before = settle(server)
        def attack() -> tuple[int, int]:
            tried = checked = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), connect_from("127.0.0.2", server.port) as s:
                    s.sendall(hello("guesser", "guess-" + "g" * 30))
                    got = read_frame(s)
                    tried += 1
                    checked += got is not None and got[3] == "invalid token"
            return tried, checked

        with server.sampling(), forked(attack) as result:
            probe = probe_requests(lab, server, False, 300, seconds + 10)
            tried, checked = result()
        after = settle(server, 0.5)
        warnings = sum(1 for x in server.log_lines() if "level=warning" in x)
    return Row("12 wrong tokens from one address", probe, (before, server.peak, after),
               f"{tried / seconds:,.0f} tries/s, {checked} checked; {warnings} WARNING lines",
               ok=checked <= 30 and warnings <= 100)


def worst_case(lab: Lab) -> Row:
    """Every default bound reached at once, on mTLS: max_clients (256) clients, 32 of them
    asking big reads and reading nothing (the answer budget used up), the others each
    sending tiny bad frames (ten times their size in ERRORs) and reading nothing, then a
    max_frame frame but for its last byte; and max_handshakes (64) TLS
    handshakes stalled after the ClientHello, 100 more connections waiting behind them.
    The peak RSS is the measured worst case of docs/security.md."""
    hdr = I2C_OUT_HDR.pack(encode_i2c_addr(0x50, False), 0, I2C_FLAGS_M_RD)
    reads = b"".join(frame([2, k + 1, "1", [[hdr, 8192]] * 31, None]) for k in range(40))
    partial = (262144).to_bytes(4, "big") + b"\x92" + b"\x00" * 262142
    bad = b"\x00\x00\x00\x01\xc0" * 100_000  # 500 KB of nil frames: 5.7 MB of ERRORs
    ctx = ssl.create_default_context(cafile=str(lab.certs["ca"]))
    ctx.load_cert_chain(str(lab.certs["admin"]))
    socks: list[socket.socket] = []
    with lab.serve(tls=True) as server:
        before = settle(server)
        with server.sampling():
            with BlockingClient("127.0.0.1", server.port, auth=lab.auth(True)) as legit:
                for k in range(255):  # the legitimate client is the 256th
                    raw = connect_from(sources(8)[k % 8], server.port)
                    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                    tls.sendall(hello("hog", None))
                    assert read_frame(tls) is not None
                    tls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                    tls.settimeout(0.05)
                    with contextlib.suppress(OSError):  # answers pile up, or a frame does
                        tls.sendall(reads if k < 32 else bad + partial)
                    socks.append(tls)
                for k in range(164):  # ClientHello, then nothing
                    raw = connect_from(sources(20, 20)[k % 20], server.port)
                    out = ssl.MemoryBIO()
                    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="127.0.0.1")
                    with contextlib.suppress(ssl.SSLWantReadError):
                        obj.do_handshake()
                    raw.sendall(out.read())
                    socks.append(raw)
                time.sleep(2.0)
                probe = Probe().run(lambda: tmp_id(legit), 200, 30)
            during = server.rss()
        for x in socks:
            with contextlib.suppress(OSError):
                x.close()
        after = settle(server, 2.0)
    return Row("worst case: every default bound at once (mTLS)", probe,
               (before, max(server.peak, during), after), f"{len(socks)} attacker sockets")


ATTACKS: dict[str, Callable[[Lab], Row]] = {
    "spi-read-only": spi_read_only, "tls-idle": tls_idle, "squatters": squatters,
    "lease-stack": lease_stack, "bogus-buses": bogus_buses, "never-read": never_read,
    "log-injection": log_injection, "terminal-injection": terminal_injection,
    "ten-bit-lease": ten_bit_lease, "wrong-tokens": wrong_tokens, "worst-case": worst_case,
}


def table(rows: list[Row]) -> str:
    head = ["attack", "legitimate served/tried", "p99 ms", "server RSS MiB before/peak/after",
            "what the attack got"]
    cells = [head, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
           for row in cells]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def run(names: list[str], src: Path, workdir: Path) -> list[Row]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8192):  # the attackers hold thousands of sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    lab = Lab(workdir, src)
    lab.make_certs()
    rows = []
    for name in names:
        rows.append(ATTACKS[name](lab))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO,
                    help="the tree whose server to attack (default: this one)")
    ap.add_argument("attacks", nargs="*", metavar="ATTACK",
                    help=f"which (default: all): {', '.join(ATTACKS)}")
    a = ap.parse_args(argv)
    unknown = set(a.attacks) - set(ATTACKS)
    if unknown:
        ap.error(f"no attack {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as d:
        rows = run(a.attacks or list(ATTACKS), a.src.resolve(), Path(d))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
