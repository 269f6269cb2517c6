#!/bin/sh
# The pure-Python fallback and the compiled hot path (setup.py with BUSBRIDGE_COMPILE=1),
# both tested: the build check against the sources as they are, then a mypyc build in a
# copy of the tree (scripts/build_compiled.sh), every hot module checked compiled, and
# the default test suite and the bench smoke test run against it.  Uses the active
# environment (needs mypy and gcc).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/busbridge-compiled.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== pure Python: every hot module interpreted, and said so"
(cd "$src" && find protocol bridge -name '*.cpython-*.so' | grep -q . && {
    echo "compiled modules in the source tree; remove them: git clean -fX -- '*.so'"; exit 1; }
    BUSBRIDGE_EXPECT_BUILD=interpreted python -m pytest -q -p no:cacheprovider \
    tests/test_compiled.py) || exit 1

echo "== compiled: build, check, then the default suite and the bench smoke test"
sh "$src/scripts/build_compiled.sh" "$work"
cd "$work"
export PYTHONPATH="$work" BUSBRIDGE_EXPECT_BUILD=compiled
python -m pytest -q -p no:cacheprovider
python -m bridge.cli bench --quick
