#!/bin/sh
# Build the compiled hot path (setup.py with BUSBRIDGE_COMPILE=1, the modules of
# bridge/compiled.py) with mypyc into a copy of the tree, DIR; then
# `PYTHONPATH=DIR busbridge ...` runs the compiled build, e.g. the bench:
#   scripts/build_compiled.sh /tmp/bb-compiled
#   (cd /tmp && PYTHONPATH=/tmp/bb-compiled python -m bridge.cli bench --reps 5)
# Uses the active environment (needs mypy, msgpack-types and gcc: pip install -e '.[dev]').
set -eu
dir=${1:?usage: scripts/build_compiled.sh DIR}
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
(cd "$src" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dir")
cd "$dir"
echo "compiling the hot path with mypyc into $dir (a few minutes)"
BUSBRIDGE_COMPILE=1 python setup.py -q build_ext --inplace >build.log 2>&1 || {
    tail -40 build.log; exit 1; }
cd /  # not the sources of the current directory: the copy
PYTHONPATH="$dir" python -m bridge.cli info --local
