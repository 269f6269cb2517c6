"""The bridge against a bare uvloop echo, in one run: ``python benchmarks/bench.py``.

Same as ``busbridge bench``; see ``bridge/bench/`` for what is measured.
"""

import sys

from bridge.bench import main

if __name__ == "__main__":
    sys.exit(main())
