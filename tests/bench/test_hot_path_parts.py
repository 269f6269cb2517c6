"""The per-part measurements of benchmarks/hot_path.py (and instructions.py, which
counts the same parts) still run against the current protocol: each part is
repeatable on its own, as timeit and callgrind run it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_part_of_a_register_read_runs_repeatedly_on_its_own() -> None:
    parts = _load("hot_path").parts()
    assert any("decode + validate" in name for name in parts)
    for fn in parts.values():
        for _ in range(50):  # a part that leaves state behind fails on its second run
            fn()
