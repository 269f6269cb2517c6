#!/bin/sh
# The opt-in compiled hot path (setup.py with BUSBRIDGE_COMPILE=1): build it with mypyc
# in a copy of the tree, then run the default test suite and the bench smoke test
# against the compiled modules.  Uses the active environment (needs mypy and gcc).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/busbridge-compiled.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$src" && git ls-files -z | xargs -0 cp --parents -t "$work")
cd "$work"
echo "compiling the hot path with mypyc (about a minute)"
BUSBRIDGE_COMPILE=1 python setup.py -q build_ext --inplace >build.log 2>&1 || {
    tail -40 build.log; exit 1; }
PYTHONPATH="$work" python - <<'PY'
import importlib
hot = [importlib.import_module(name) for name in
       ("protocol.codec", "protocol.connection", "bridge.server.session",
        "bridge.server.scheduling")]
for m in hot:
    assert m.__file__.endswith(".so"), f"{m.__name__} is not the compiled module: {m.__file__}"
print("compiled:", *(m.__file__ for m in hot))
PY
PYTHONPATH="$work" python -m pytest -q -p no:cacheprovider
PYTHONPATH="$work" python -m bridge.cli bench --quick
