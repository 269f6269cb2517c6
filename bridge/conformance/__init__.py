"""A conformance kit for the busbridge wire protocol, written from protocol/SPEC.md alone.

It talks to any server over raw sockets (msgpack, stdlib ``ssl``) and imports nothing
from ``protocol`` or the client, so a second implementation is judged by the document
and not by shared code::

    from bridge.conformance import Target, run_checks
    report = run_checks(Target("127.0.0.1", 7707))
    assert report.ok, report.failed

``busbridge conformance HOST:PORT`` is the command-line front end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from . import checks as _checks  # noqa: F401  (registers the checks)
from .registry import REGISTRY, Check, CheckResult, Ctx, Policy, all_checks, handshake, select
from .registry import run_one as _run_one
from .spec import find_spec_md
from .wire import Target

__all__ = ["REGISTRY", "Check", "CheckResult", "Policy", "Report", "Target", "all_checks",
           "find_spec_md", "run_checks"]


@dataclass
class Report:
    """Every check's outcome, in run order, and the totals."""

    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count("FAIL") == 0

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == "FAIL"]

    def by_id(self) -> dict[str, CheckResult]:
        return {r.id: r for r in self.results}

    def summary(self) -> str:
        return (f"{len(self.results)} checks: {self.count('PASS')} passed, "
                f"{self.count('FAIL')} failed, {self.count('SKIP')} skipped "
                f"({self.seconds:.1f} s)")

    def to_json(self) -> str:
        return json.dumps({"results": [asdict(r) for r in self.results],
                           "passed": self.count("PASS"), "failed": self.count("FAIL"),
                           "skipped": self.count("SKIP"), "seconds": round(self.seconds, 3)},
                          indent=2)


def run_checks(target: Target, pattern: str | None = None, *, spec_path: str | None = None,
               policy: Policy | None = None,
               on_result: Callable[[CheckResult], None] | None = None) -> Report:
    """Run the checks matching ``pattern`` (all by default) against ``target``.

    The first handshake learns the buses and limits; if it fails, that is the only
    result (every other check would fail the same way).
    """
    spec_text = find_spec_md(spec_path).read_text(encoding="utf-8")
    t0 = time.perf_counter()
    report = Report()
    chosen = select(all_checks(spec_text), pattern)
    ctx = Ctx(target, spec_text, policy=policy or Policy())
    try:
        ctx.welcome = handshake(target)
    except Exception as e:
        res = CheckResult("hs.first-handshake", "§6", "FAIL",
                          f"cannot complete a handshake with {target.host}:{target.port}: {e}", 0)
        report.results.append(res)
        if on_result:
            on_result(res)
        report.seconds = time.perf_counter() - t0
        return report
    for chk in chosen:
        res = _run_one(ctx, chk)
        report.results.append(res)
        if on_result:
            on_result(res)
    report.seconds = time.perf_counter() - t0
    return report
