"""The conformance kit against ``busbridge serve``: one test per check.

The kit runs once per server configuration; each check becomes a test that passes
on PASS, skips on SKIP and fails on FAIL.  Checks the server is known to fail today
are strict xfails naming the item of issue 13 behind them, or "kit update pending" where
SPEC.md decided against what the (clean-room) kit still expects: the failure stays visible
in the report (``-ra``), and once the server is fixed the test fails as XPASS, so the
entry is removed and the check guards the fix.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.conformance import Report, Target, all_checks, find_spec_md, run_checks

from .serve import Serve

_ROLE = ("kit update pending: the vector role `refused` (SPEC §12, §12.19: frames a server "
         "must refuse, with their answer)")

#: Checks today's server fails, each with the issue-13 item that explains it.
KNOWN_FAILURES: dict[str, str] = {
    "err.ext-type": "kit update pending: an extension type is malformed (SPEC §3, §9.3), "
                    "not limit-exceeded",
    "vec.annotated-agree": _ROLE,
    **{f"vec.{name}": _ROLE for name in (
        "refused-truncated", "refused-ext-type", "refused-ping-arity", "refused-unknown-type",
        "refused-result-before-hello", "refused-hello-token-nil")},
}

#: Known failures that only show on a particular configuration.
KNOWN_FAILURES_SECURE: dict[str, str] = {}

SPEC_TEXT = find_spec_md().read_text(encoding="utf-8")
CHECK_IDS = [c.id for c in all_checks(SPEC_TEXT)]

#: Each wait of the kit; generous, since the machine may be busy.
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def default_server() -> Iterator[Serve]:
    server = Serve()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def default_report(default_server: Serve) -> Report:
    return run_checks(Target("127.0.0.1", default_server.port, timeout=TIMEOUT))


def judge(report: Report, check_id: str, known: dict[str, str]) -> None:
    """Turn one check's outcome into the test's outcome."""
    res = report.by_id().get(check_id)
    if res is None:
        first = report.results[0] if report.results else None
        pytest.fail(f"{check_id} did not run: {first.line() if first else 'no results'}")
    if check_id in known:
        if res.outcome == "FAIL":
            pytest.xfail(f"{known[check_id]} -- {res.reason}")
        if res.outcome == "SKIP":  # this board cannot show it: no evidence of a fix
            pytest.skip(res.reason)
        pytest.fail(f"{check_id} is listed as a known failure ({known[check_id]}) but now "
                    f"{res.outcome}s: {res.reason}. Remove it from the list.", pytrace=False)
    if res.outcome == "SKIP":
        pytest.skip(res.reason)
    assert res.outcome == "PASS", f"{res.id} ({res.section}): {res.reason}"


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_default_board(default_report: Report, check_id: str) -> None:
    judge(default_report, check_id, KNOWN_FAILURES)


def test_known_failures_are_checks() -> None:
    """Every entry of the known-failure lists names a check that exists."""
    assert set(KNOWN_FAILURES) | set(KNOWN_FAILURES_SECURE) <= set(CHECK_IDS)


# -- the command --------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "conformance", *args],
                          capture_output=True, text=True, timeout=120)


def test_command_prints_one_line_per_check_and_exits_0(default_server: Serve) -> None:
    out = _cli(f"127.0.0.1:{default_server.port}", "-k", "vec.ping,hs.version-missing")
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [ln.split()[:2] for ln in lines[:-1]] == [["PASS", "hs.version-missing"],
                                                     ["PASS", "vec.ping"]]
    assert "§12.16" in lines[1]
    assert lines[-1].startswith("2 checks: 2 passed, 0 failed, 0 skipped")


def test_command_exits_1_when_a_check_fails(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _cli(f"127.0.0.1:{port}", "--json")
    assert out.returncode == 1
    assert '"failed": 1' in out.stdout
    assert "hs.first-handshake" in out.stdout


def test_the_kit_loads_no_project_code(default_server: Serve) -> None:
    """Clean room: running checks imports neither protocol/ nor the client (nor the server)."""
    code = (
        "import sys\n"
        "from bridge.conformance import Target, run_checks\n"
        f"r = run_checks(Target('127.0.0.1', {default_server.port}), 'hs.welcome,vec.ping')\n"
        "assert r.ok, r.results\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'protocol'\n"
        "             or (m.startswith('bridge.') and not m.startswith('bridge.conformance'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_command_refuses_a_bad_address() -> None:
    out = _cli("no-port-here")
    assert out.returncode == 2
    assert "is not HOST:PORT" in out.stderr

