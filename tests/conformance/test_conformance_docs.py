"""docs/conformance.md stays true: every check it names exists, every check is listed,
every MUST / MUST NOT of SPEC.md has a traceability row, every known failure is shown."""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from pathlib import Path

from bridge.conformance.spec import normative_sentences

from .test_conformance import CHECK_IDS, KNOWN_FAILURES, SPEC_TEXT

DOC = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text(encoding="utf-8")
NAMED = re.compile(r"`((?:adm|hs|fr|err|lim|ls|spi|i2c|pipe|dl|cc|tr|sec|pol|vec)\.[a-z0-9.*-]+)`")


def _section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end > 0 else None]


def test_every_check_the_doc_names_exists() -> None:
    stale = [n for n in NAMED.findall(DOC)
             if not any(fnmatch.fnmatchcase(c, n) for c in CHECK_IDS)]
    assert not stale, f"docs/conformance.md names checks that do not exist: {stale}"


def test_every_check_is_in_the_appendix() -> None:
    appendix = set(NAMED.findall(_section("Appendix")))
    missing = [c for c in CHECK_IDS if not c.startswith("vec.") and c not in appendix]
    assert not missing, f"checks missing from the appendix of docs/conformance.md: {missing}"


def test_every_must_of_the_spec_has_a_traceability_row() -> None:
    table = _section("Traceability")
    rows = Counter(m.group(1) for m in re.finditer(r"^\| (§[\d.]+|preamble) \|", table, re.M))
    lines = {(n.section, n.line) for n in normative_sentences(SPEC_TEXT)}
    need = Counter(section for section, _ in lines)
    short = {s: (n, rows[s]) for s, n in need.items() if rows[s] < n}
    assert not short, f"sections with more MUST lines than traceability rows: {short}"


def test_every_known_failure_is_in_the_results_table() -> None:
    results = _section("Results against today's server")
    missing = [c for c in KNOWN_FAILURES if f"`{c}`" not in results]
    assert not missing, f"known failures not shown in docs/conformance.md: {missing}"
