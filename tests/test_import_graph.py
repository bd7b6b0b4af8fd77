"""The import graph of harness/ and backends/ (imports inside functions count): no cycles, and the layering the
README promises (the harness never imports a backend)."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGES = ("harness", "backends")


def module_files() -> dict[str, Path]:
    files = {}
    for root in PACKAGES:
        for path in (ROOT / root).rglob("*.py"):
            mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            files[mod.removesuffix(".__init__")] = path
    return files


def imports_of(mod: str, path: Path, files: dict[str, Path]) -> dict[str, int]:
    """Project modules that ``mod`` imports -> the line of the first such import."""
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

    def resolve(name: str) -> str | None:  # the longest project module that name (or a prefix of it) names
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in files:
                return ".".join(parts[:i])
        return None

    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            target = resolve(name)
            if target and target != mod and not mod.startswith(target + "."):  # a package's own __init__: no cycle
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    files = module_files()
    return {mod: imports_of(mod, path, files) for mod, path in files.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30  # the walk found the project
    described = [" | ".join(f"{a}:{graph[a][b]} -> {b}" for a in c for b in graph[a] if b in c) for c in cycles(graph)]
    assert described == []


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_harness_never_imports_a_backend():
    offenders = [f"{mod} imports {target} (line {line})" for mod, targets in import_graph().items()
                 if mod.startswith("harness") for target, line in targets.items() if target.startswith("backends")]
    assert offenders == []
