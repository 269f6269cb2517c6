"""The house rules of docs/architecture.md, checked on the code's own imports.

A newcomer trusts the architecture page only if it cannot drift: this test reads every
module's imports (inside functions too) and fails on an import cycle, on an arrow the
page forbids, and on an import of another module's private name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "bridge")
SHARED = {"bridge", "bridge.addresses", "bridge.compiled", "bridge.env", "bridge.logs",
          "bridge.recording", "bridge.runtime"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> Iterator[tuple[str, list[str], bool]]:
    """(imported module, names taken, only for type checking) for each import."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    tree = ast.parse(path.read_text("utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for sub in node.body:
                for inner in ast.walk(sub):
                    typing_only.add(id(inner))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # `from . import x` imports the submodule x when there is one
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for sub in subs:
                yield sub, [], id(node) in typing_only
            if target in MODULES and len(subs) < len(names):
                yield target, [n for n in names if f"{target}.{n}" not in MODULES], \
                    id(node) in typing_only
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, [], id(node) in typing_only


EDGES = {(src, dst): (names, typing)
         for src, path in MODULES.items()
         for dst, names, typing in _imports(src, path) if dst != src}


def _wing(module: str) -> str:
    if module in SHARED:
        return "shared"
    parts = module.split(".")
    if parts[0] == "protocol":
        return "protocol"
    return parts[1]


#: wing -> what it may import (docs/architecture.md, "Who may import whom"): a wing, or one
#: module of another wing. Everything not listed is forbidden.
MAY: dict[str, set[str]] = {
    "protocol": set(),
    "shared": {"protocol"},
    "buses": {"protocol", "shared"},
    "server": {"protocol", "shared", "bridge.buses.base"},
    "config": {"protocol", "shared", "buses", "bridge.server.settings"},
    "client": {"protocol", "shared"},
    "mqtt": {"protocol", "shared", "client", "server", "config"},
    "dropin": {"protocol", "shared", "client", "bridge.mqtt.discovery"},
    "native": {"protocol", "shared", "client", "dropin", "bridge.buses.linux.abi"},
    "vhost": {"protocol", "shared", "client"},
    "conformance": set(),
    "bench": {"protocol", "shared", "client", "server", "config"},
    "testing": {"protocol", "shared", "client", "server", "config", "dropin"},
    "cli": {"protocol", "shared", "client", "server", "config", "buses", "dropin", "native",
            "vhost", "mqtt", "conformance", "bench"},
}
#: the two halves of mqtt/ stay apart: presence is the board's, discovery the client's
MQTT_BOARD_SIDE = {"bridge.mqtt.presence", "bridge.mqtt.announce"}


def _allowed(src: str, dst: str) -> bool:
    wing, target = _wing(src), _wing(dst)
    if wing == target:
        return True
    may = MAY[wing]
    return target in may or any(dst == m or dst.startswith(m + ".") for m in may)


def test_there_is_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for (src, dst), (_names, typing) in EDGES.items():
        if not typing:
            graph[src].add(dst)
    seen: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        seen.add(m)
        stack.append(m)
        on_stack.add(m)
        for n in sorted(graph[m]):
            if n in on_stack:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in seen:
                visit(n)
        stack.pop()
        on_stack.discard(m)

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    # a package's facade importing its own modules is not a cycle of the house
    cycles = [c for c in cycles if not all(x.startswith(c[0].rpartition(".")[0]) for x in c)
              or len({x.rpartition(".")[0] for x in c}) > 1]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("wing", sorted(MAY))
def test_every_wing_imports_only_what_the_architecture_allows(wing: str) -> None:
    bad = [f"{src} -> {dst}" for (src, dst) in EDGES
           if _wing(src) == wing and not _allowed(src, dst)]
    assert not bad, f"{wing} may import only {sorted(MAY[wing])}: {bad}"


def test_every_module_belongs_to_a_wing_the_table_knows() -> None:
    assert {_wing(m) for m in MODULES} <= set(MAY), {_wing(m) for m in MODULES} - set(MAY)


def test_the_two_halves_of_mqtt_stay_apart_and_the_client_never_imports_mqtt() -> None:
    bad = [f"{src} -> {dst}" for (src, dst) in EDGES
           if (src in MQTT_BOARD_SIDE and _wing(dst) == "client")
           or (src.startswith("bridge.mqtt.") and src not in MQTT_BOARD_SIDE
               and _wing(dst) in ("server", "config"))
           or (_wing(src) == "client" and _wing(dst) == "mqtt")]
    assert not bad, bad


def test_nothing_imports_the_command_package() -> None:
    bad = [f"{src} -> {dst}" for (src, dst) in EDGES
           if _wing(dst) == "cli" and _wing(src) != "cli"]
    assert not bad, bad


def test_no_module_imports_another_modules_private_names() -> None:
    bad = [f"{src} -> {dst}: {n}" for (src, dst), (names, _t) in EDGES.items()
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


def test_modules_stay_small_enough_to_read_in_one_sitting() -> None:
    big = [f"{m}: {n} lines" for m, p in MODULES.items()
           if (n := len(p.read_text("utf-8").splitlines())) > 600]
    assert not big, big


def test_c_sources_of_the_preload_library_stay_small_enough_to_read_in_one_sitting() -> None:
    sources = sorted((ROOT / "bridge" / "native" / "csrc").glob("*.[ch]"))
    assert any(p.name == "preload.c" for p in sources), "the preload library's sources moved"
    big = [f"{p.name}: {n} lines" for p in sources
           if (n := len(p.read_text("utf-8").splitlines())) > 650]
    assert not big, big


def test_classes_are_split_by_responsibility_before_they_grow_past_250_lines() -> None:
    big = [f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
           for m, p in MODULES.items()
           for node in ast.walk(ast.parse(p.read_text("utf-8")))
           if isinstance(node, ast.ClassDef) and node.end_lineno
           and node.end_lineno - node.lineno + 1 > 250]
    assert not big, big


def test_c_sources_of_the_frame_decoders_stay_small_enough_to_read_in_one_sitting() -> None:
    sources = [ROOT / "protocol" / "_native.c",
               *sorted((ROOT / "protocol" / "csrc").glob("*.[ch]"))]
    assert len(sources) >= 3, "protocol._native's parts moved"
    big = [f"{p.name}: {n} lines" for p in sources
           if (n := len(p.read_text("utf-8").splitlines())) > 650]
    assert not big, big
