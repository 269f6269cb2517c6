"""The entry point both atheris scripts share: libFuzzer flags pass through, and
without a corpus directory the run starts from the script's own seeds."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import atheris


def fuzz(one_input: Callable[[bytes], None], seeds: Iterable[bytes], name: str) -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        seed_dir = Path(tempfile.mkdtemp(prefix=f"busbridge-{name}-seeds-"))
        for i, s in enumerate(seeds):
            (seed_dir / f"seed{i}").write_bytes(s)
        argv.append(str(seed_dir))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
