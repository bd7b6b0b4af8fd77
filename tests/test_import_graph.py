"""The import graph of harness/ and backends/ (imports inside functions count): no cycles, the layering the
README promises (the harness never imports a backend), and the layers of harness/ (docs/architecture.md): a lower
layer never imports a higher one, and the timing core imports alone."""
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


ENTRY = ("harness.cli", "harness.api", "harness.sdk")  # the command lines and the Python API: nothing imports them
LAYERS = ("harness.model", "harness.measure", "harness.accuracy", "harness.profile", "harness.record", "harness.plugin",
          "harness.config", "harness.run", "harness.report")

# layer -> what it may never import (a module or a package: a package covers everything below it), and why
LAYER_RULES = {
    "harness.errors": (LAYERS + ENTRY, "the foundation imports no layer"),
    "harness.progress": (LAYERS + ENTRY, "the foundation imports no layer"),
    "harness.version": (LAYERS + ENTRY, "the foundation imports no layer"),
    "harness.model": (("harness.accuracy", "harness.measure", "harness.profile", "harness.record", "harness.plugin",
                       "harness.config", "harness.run", "harness.report"),
                      "model sources and their facts are the bottom layer"),
    "harness.measure": (("harness.accuracy", "harness.profile", "harness.record", "harness.run", "harness.plugin",
                         "harness.config", "harness.report"),
                        "the timing core and its statistics work without a job, plugins, Hydra, result files or a "
                        "report"),
    "harness.measure.environment": (("harness.run.pinning",), "recording the environment claims no GPU"),
    "harness.accuracy": (("harness.profile", "harness.record", "harness.plugin", "harness.config", "harness.run",
                          "harness.report"), "numerics and validation work on a backend's hooks alone"),
    "harness.profile": (("harness.plugin", "harness.config", "harness.run", "harness.report"),
                        "a cell's profile needs its hooks and writes its files through record/"),
    "harness.record": (("harness.profile", "harness.plugin", "harness.config", "harness.run", "harness.report"),
                       "result files, their labels and the end-of-job table are made without running anything"),
    "harness.plugin": (("harness.config", "harness.run", "harness.report"),
                       "discovering plugins puts nothing into Hydra's ConfigStore"),
    "harness.config": (("harness.run", "harness.report", "harness.accuracy.validate", "harness.accuracy.numerics"),
                       "checking a config runs nothing, validates nothing and reports nothing"),
    "harness.config.schema": (("harness.model",), "the schema is typed data and range checks: it reads no model "
                              "file (harness.config.jobcheck checks a job against its model)"),
    "harness.run": (("harness.report",), "a job prints its end-of-job table through record/, not the report"),
    "harness.report": (("harness.plugin",) + ENTRY,
                       "a report reads result files: it labels runs from their run.json and discovers no plugin"),
}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{mod}:{line} imports {target} ({why})"
            for layer, (forbidden, why) in LAYER_RULES.items()
            for mod, targets in graph.items() if _within(mod, layer)
            for target, line in targets.items() if any(_within(target, f) for f in forbidden)]


def test_lower_layers_never_import_higher_ones():
    graph = import_graph()
    assert all(any(_within(mod, layer) for mod in graph) for layer in LAYER_RULES)  # every rule names real modules
    assert layer_violations(graph) == []


def test_layer_rules_catch_an_upward_import():
    graph = {"harness.measure.instrument": {"harness.record.samples": 7},  # the interval target_rel_ci waits on
             "harness.run.sweep": {"harness.report.summary": 4},  # the end-of-job table
             "harness.record.results": {"harness.measure.stats": 3}}  # downward: allowed
    assert layer_violations(graph) == [
        f"harness.measure.instrument:7 imports harness.record.samples ({LAYER_RULES['harness.measure'][1]})",
        f"harness.run.sweep:4 imports harness.report.summary ({LAYER_RULES['harness.run'][1]})"]


def test_tools_reach_backends_through_the_registry():
    """A tool under tools/ loads a backend through the plugin registry like the harness does, never from the
    backend's own modules (whose internals change without notice)."""
    files = module_files()
    offenders = [f"{path.name} imports {target} (line {line})" for path in sorted((ROOT / "tools").glob("*.py"))
                 for target, line in imports_of("tools." + path.stem, path, files).items()
                 if target.startswith("backends")]
    assert offenders == []


def test_the_timing_core_imports_alone():
    """A tool can time something with harness.measure.instrument without Hydra, the plugins, the config or a model
    loader coming along (checked in a fresh interpreter: this one has imported everything)."""
    import subprocess
    import sys

    code = ("import sys, harness.measure.instrument; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'transformers') "
            "or m.startswith(('harness.plugin', 'harness.config', 'harness.model', 'harness.run')))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
