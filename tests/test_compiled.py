"""Which build runs: the start-up check agrees with where the hot modules load from.

The default run tests the pure-Python build; scripts/check_compiled.sh runs this
suite again against the mypyc build with BUSBRIDGE_EXPECT_BUILD=compiled, so each
build is tested, and each says which it is.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

from conftest import ROOT, cli_env, serve_process

from bridge.compiled import HOT_MODULES, INTERPRETED, NATIVE_MODULES, build_status


def test_build_status_says_where_the_hot_modules_load_from() -> None:
    st = build_status()
    for name in HOT_MODULES:
        loaded_from = importlib.import_module(name).__file__ or ""
        assert (name in st.compiled) == (not loaded_from.endswith(".py")), loaded_from
    expected = os.environ.get("BUSBRIDGE_EXPECT_BUILD")
    if expected:  # set by scripts/check_compiled.sh
        assert st.state == expected, st.summary()
        # the compiled build builds the C frame decoder too; the pure tree has none
        assert st.native == (NATIVE_MODULES if expected == "compiled" else ()), st.summary()
    else:
        assert st.state in ("compiled", "interpreted"), st.summary()  # never a stale mix


def test_the_compiled_list_names_real_modules_and_the_exceptions_are_on_the_path() -> None:
    for name in (*HOT_MODULES, *INTERPRETED):
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name
    assert not set(HOT_MODULES) & set(INTERPRETED)
    # What mypyc cannot compile is always the interpreted module, in either build.
    for name in INTERPRETED:
        assert (importlib.import_module(name).__file__ or "").endswith(".py"), name


def test_info_local_reports_the_build() -> None:
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "info", "--local", "--json"],
                       capture_output=True, text=True, timeout=60, env=cli_env(), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["hot_path"] == build_status().state
    assert sorted(d["compiled"] + d["interpreted"]) == sorted(HOT_MODULES)
    assert d["native"] == list(build_status().native)
    text = subprocess.run([sys.executable, "-m", "bridge.cli", "info", "--local"],
                          capture_output=True, text=True, timeout=60, env=cli_env(), cwd=ROOT)
    assert build_status().summary() in text.stdout


def test_serve_says_at_start_up_whether_the_hot_path_is_compiled() -> None:
    with serve_process() as serve:
        serve.wait_for("hot path")
        assert serve.seen[-1] == f"busbridge: {build_status().summary()}\n", serve.seen
        serve.stop(timeout=20)
