"""``busbridge serve`` in a subprocess on 127.0.0.1, for the conformance kit to test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO


class Serve:
    """The real command, as a user starts it; the port comes from its ready line."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        assert self.proc.stderr is not None
        self.lines: list[str] = []
        self.port = self._wait_ready(self.proc.stderr, 30.0)
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()

    def _wait_ready(self, stream: IO[str], timeout: float) -> int:
        end = time.monotonic() + timeout
        got: list[str] = []

        def read() -> None:
            for line in stream:
                got.append(line)
                if "serving board" in line:
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(max(0.0, end - time.monotonic()))
        self.lines += got
        for line in got:
            m = re.search(r"serving board .* on 127\.0\.0\.1:(\d+)", line)
            if m:
                return int(m.group(1))
        self.stop()
        raise AssertionError(f"busbridge serve did not start: {''.join(got)!r}")

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
