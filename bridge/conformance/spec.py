"""SPEC.md itself: where it is, its test vectors and its MUST sentences, read at run time.

The vector checks replay what this module parses out of the document on every run,
so the kit cannot drift from the vectors; nothing here imports the project's code.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```(vector|annotated)([^\n]*)\n(.*?)^```", re.M | re.S)
_HEADING = re.compile(r"^(#{2,3}) (\d+(?:\.\d+)?[a-z]?)\.? ", re.M)
_KEY = re.compile(r"^([a-z_]+):\s?(.*)$")
_NORMATIVE = re.compile(r"\b(MUST NOT|MUST|SHALL NOT|SHALL)\b")


def find_spec_md(explicit: str | None = None) -> Path:
    """SPEC.md: ``explicit``, else next to the installed ``protocol`` package (not imported)."""
    if explicit:
        return Path(explicit)
    found = importlib.util.find_spec("protocol")
    candidates = []
    if found is not None and found.submodule_search_locations:
        candidates += [Path(p) / "SPEC.md" for p in found.submodule_search_locations]
    candidates.append(Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md")
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError("protocol/SPEC.md not found; give its path with --spec")


@dataclass(frozen=True)
class Vector:
    name: str
    role: str
    section: str
    fields: dict[str, str]
    data: bytes

    @property
    def body(self) -> bytes:
        """The frame body (after the 4-byte prefix) of a framed vector."""
        return self.data[4:] if self.role != "struct" else self.data


def section_at(text: str, pos: int) -> str:
    """The number of the innermost heading before ``pos``, as ``§12.3`` (or ``preamble``)."""
    sec = ""
    for m in _HEADING.finditer(text, 0, pos):
        sec = m.group(2)
    return f"§{sec}" if sec else "preamble"


def parse_vectors(text: str) -> tuple[list[Vector], dict[str, bytes]]:
    """The ``vector`` blocks, and the bytes each ``annotated`` block spells out."""
    vectors: list[Vector] = []
    annotated: dict[str, bytes] = {}
    for m in _FENCE.finditer(text):
        kind, info, block = m.group(1), m.group(2).strip(), m.group(3)
        if kind == "annotated":
            hexes = [line.split("#", 1)[0] for line in block.splitlines()]
            annotated[info] = bytes.fromhex("".join("".join(hexes).split()))
            continue
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            km = _KEY.match(line)
            if km and not line[0].isspace():
                key = km.group(1)
                fields[key] = km.group(2)
            elif key is not None:
                fields[key] += " " + line.strip()
        if "name" not in fields or "hex" not in fields:
            raise ValueError(f"vector block at offset {m.start()} lacks name or hex")
        data = bytes.fromhex("".join(fields["hex"].split()))
        vectors.append(Vector(fields["name"].strip(), fields.get("role", "").strip(),
                              section_at(text, m.start()), fields, data))
    return vectors, annotated


@dataclass(frozen=True)
class Normative:
    section: str
    keyword: str
    line: int
    text: str


def normative_sentences(text: str) -> list[Normative]:
    """Every MUST / MUST NOT / SHALL in the document, with its section and line.

    The RFC 2119 boilerplate sentence and §11's quotations of other documents are
    included; docs/conformance.md says for each whether it binds a busbridge peer.
    """
    out: list[Normative] = []
    lines = text.splitlines()
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    for i, line in enumerate(lines):
        for m in _NORMATIVE.finditer(line):
            out.append(Normative(section_at(text, offsets[i]), m.group(1), i + 1,
                                 line.strip()))
    return out
