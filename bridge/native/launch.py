"""Running a command with the preload library and its agent (``busbridge run``).

The command runs as a child of this process, with ``LD_PRELOAD`` naming the
library and ``BUSBRIDGE_NATIVE_SOCKET`` the agent's socket; this process serves
the agent until the child exits and exits with its status.  Signals that would
stop ``busbridge run`` are left to the child, which decides what they mean.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ..env import NATIVE_SOCKET as ENV_SOCKET
from ..env import PRELOAD_LIBRARY as ENV_LIBRARY
from .agent import Agent, Listener

log = logging.getLogger("busbridge.native")

HERE = Path(__file__).resolve().parent
LIBRARY_NAME = "libbusbridge_preload.so"


def library_path() -> Path | None:
    """The built preload library, or None (a pure-Python install)."""
    override = os.environ.get(ENV_LIBRARY)
    if override:
        return Path(override) if Path(override).is_file() else None
    p = HERE / LIBRARY_NAME
    return p if p.is_file() else None


def unavailable() -> str:
    """Why there is no library to preload: a wrong override, or none was built."""
    override = os.environ.get(ENV_LIBRARY)
    if override:
        return (f"{ENV_LIBRARY}={override} does not exist (or is not a file): native "
                "programs would not see the remote buses")
    return UNAVAILABLE


UNAVAILABLE = (
    "the native preload library was not built when busbridge was installed (no C "
    "compiler then?): native programs would not see the remote buses. Install gcc and "
    "reinstall busbridge (pip install --force-reinstall --no-deps busbridge, or "
    "pip install -e . in a checkout); see docs/native.md")


class ExecFailed(Exception):
    """The command could not be started; ``status`` is the shell's exit status for that
    (127: not found, 126: found but not executable)."""

    def __init__(self, name: str, error: OSError) -> None:
        super().__init__(f"{name}: {error.strerror or error}")
        self.status = 127 if error.errno == errno.ENOENT else 126


@dataclass(frozen=True)
class Program:
    """What the dynamic loader will make of a command (LD_PRELOAD applies or not)."""

    path: str
    static: bool = False
    setuid: bool = False
    go: bool = False
    python: bool = False
    interpreter: str | None = None

    def warning(self) -> str | None:
        """Why LD_PRELOAD cannot reach this program's device calls, or None."""
        name = os.path.basename(self.path)
        if self.setuid:
            return (f"{name} is setuid/setgid or has file capabilities: the loader ignores "
                    "LD_PRELOAD for it, so it sees this machine's devices, not the board's "
                    "(use `busbridge mount`, docs/native.md)")
        if self.go:
            return (f"{name} is a Go program: Go makes system calls itself, past the preload "
                    "library, so it sees this machine's devices (use `busbridge mount`)")
        if self.static:
            return (f"{name} is statically linked: LD_PRELOAD does not apply to it, so it "
                    "sees this machine's devices (use `busbridge mount`, docs/native.md)")
        return None


def _elf_facts(data: bytes) -> tuple[bool, bool] | None:
    """(static, go) from an ELF header, or None if not ELF."""
    if data[:4] != b"\x7fELF":
        return None
    is64 = data[4] == 2
    little = data[5] == 1
    end = "<" if little else ">"
    try:
        if is64:
            phoff, shoff = struct.unpack_from(end + "QQ", data, 0x20)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(
                end + "HHHHH", data, 0x36)
        else:
            phoff, shoff = struct.unpack_from(end + "II", data, 0x1C)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(
                end + "HHHHH", data, 0x2A)
        interp = any(struct.unpack_from(end + "I", data, phoff + i * phentsize)[0] == 3
                     for i in range(phnum))  # PT_INTERP
        go = False
        if shoff and shstrndx < shnum:
            name_off = 0x18 if is64 else 0x10
            strtab = shoff + shstrndx * shentsize
            fmt = end + ("Q" if is64 else "I")
            str_base = struct.unpack_from(fmt, data, strtab + name_off)[0]
            for i in range(shnum):
                (noff,) = struct.unpack_from(end + "I", data, shoff + i * shentsize)
                name = data[str_base + noff : data.index(b"\0", str_base + noff)]
                if name in (b".go.buildinfo", b".note.go.buildid", b".gopclntab"):
                    go = True
                    break
    except (struct.error, ValueError):
        return (False, False)
    return (not interp, go)


def secure_exec(path: str, st: os.stat_result) -> bool:
    """Whether exec() of ``path`` by this process is a "secure" one (AT_SECURE), for
    which the loader ignores LD_PRELOAD: the setuid/setgid bit or file capabilities
    change this process's credentials (security/commoncap.c cap_bprm_creds_from_file).
    A setuid-root program run by root, or a setuid bit on a nosuid mount, changes
    nothing: the library is preloaded."""
    with contextlib.suppress(OSError):
        if os.statvfs(path).f_flag & os.ST_NOSUID:
            return False
    uid, euid, gid, egid = os.getuid(), os.geteuid(), os.getgid(), os.getegid()
    if st.st_mode & 0o4000 and (st.st_uid != uid or st.st_uid != euid):
        return True
    if st.st_mode & 0o2000 and (st.st_gid != gid or (
            st.st_gid != egid and st.st_gid not in os.getgroups())):
        return True
    if uid != 0 and hasattr(os, "getxattr"):  # root gains nothing from file capabilities
        with contextlib.suppress(OSError):
            return bool(os.getxattr(path, "security.capability"))
    return False


def inspect_program(path: str, depth: int = 0) -> Program:
    """Look at ``path`` (a script: its interpreter) the way the loader and ld.so will."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read(64 * 1024 * 1024)
    except OSError:
        return Program(path)
    setuid = secure_exec(path, st)
    name = os.path.basename(path)
    if data[:2] == b"#!" and depth < 4:
        line = data[2 : data.find(b"\n")].decode(errors="replace").strip().split()
        if line:
            interp = line[0]
            if os.path.basename(interp) == "env" and len(line) > 1:
                interp = shutil.which(line[1]) or line[1]
            inner = inspect_program(interp, depth + 1)
            return Program(path, inner.static, inner.setuid, inner.go,
                           inner.python or "python" in os.path.basename(interp), interp)
    facts = _elf_facts(data)
    static, go = facts if facts is not None else (False, False)
    return Program(path, static, setuid, go, name.startswith("python"))


def prepare(program: str, enabled: bool = True) -> Path | None:
    """The library to preload for ``program`` (None: run it without), warning on stderr
    when the preload cannot work for it."""
    if not enabled:
        return None
    lib = library_path()
    info = inspect_program(program)
    if lib is None:
        if not info.python:
            print(f"busbridge run: warning: {unavailable()}", file=sys.stderr)
        return None
    why = info.warning()
    if why:
        print(f"busbridge run: warning: {why}", file=sys.stderr)
    return lib


#: libuv (Node) reads and writes files through io_uring when this is 1: past libc,
#: so past the library (the calls fail EBADF/EPERM on the inert descriptor).  Off
#: unless the user set it.
IO_URING = "UV_USE_IO_URING"


def child_env(env: Mapping[str, str], library: Path, socket_path: str) -> dict[str, str]:
    out = dict(env)
    pre = out.get("LD_PRELOAD", "")
    out["LD_PRELOAD"] = f"{library} {pre}".strip() if pre else str(library)
    out[ENV_SOCKET] = socket_path
    out.setdefault(IO_URING, "0")
    return out


def serve_and_run(program: str, argv: Sequence[str], env: Mapping[str, str],
                  library: Path) -> int:
    """Run ``argv`` (``program`` resolved) with the agent; its exit status (128+N for signal N)."""
    agent = Agent.from_env(env)
    listener = Listener(agent)
    child: subprocess.Popen[bytes] | None = None

    def forward(sig: int, _frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(sig)

    sys.stdout.flush()
    sys.stderr.flush()
    old: dict[int, Any] = {}
    try:
        try:
            child = subprocess.Popen(list(argv), executable=program,
                                     env=child_env(env, library, listener.path))
        except OSError as e:
            raise ExecFailed(argv[0], e) from None
        # Installed once the child runs (it must not inherit an ignored SIGINT).
        # SIGINT from the terminal reaches the whole foreground process group, the
        # child included: it is not passed on again (a program would see two Ctrl-Cs),
        # only ignored here while the child decides.  TERM and HUP, usually sent to
        # this process alone (a CI timeout), are passed on.
        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        code = child.wait()
        return code if code >= 0 else 128 - code
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        listener.close()
        agent.link.close()


def main(args: Sequence[str] | None = None) -> int:
    """``python -m bridge.native.launch PROGRAM ARGV0 ARGS...`` (used under ``run --lease``):
    the environment already holds the busbridge settings and lease tokens."""
    a = list(sys.argv[1:] if args is None else args)
    if len(a) < 2:
        print("usage: python -m bridge.native.launch PROGRAM ARGV0 [ARGS...]", file=sys.stderr)
        return 2
    lib = library_path()
    try:
        if lib is None:
            print(f"busbridge run: warning: {unavailable()}", file=sys.stderr)
            os.execve(a[0], a[1:], dict(os.environ))
        assert lib is not None
        return serve_and_run(a[0], a[1:], dict(os.environ), lib)
    except ExecFailed as e:
        print(f"busbridge: error: {e}", file=sys.stderr)
        return e.status
    except OSError as e:  # the execve above
        failed = ExecFailed(a[1], e)
        print(f"busbridge: error: {failed}", file=sys.stderr)
        return failed.status


if __name__ == "__main__":
    sys.exit(main())
