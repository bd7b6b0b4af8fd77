"""The shape of the code: no function in harness/, backends/ or tools/ runs longer than ``MAX_FUNCTION_LINES``
(from its ``def`` line to its last line, nested functions counted on their own too), so that each one reads in one
screen and is named after the one thing it does."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGES = ("harness", "backends", "tools")
MAX_FUNCTION_LINES = 60


def long_functions(source: str, where: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``where:line name (N lines)`` for each function in ``source`` longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def project_files() -> list[Path]:
    return sorted(path for root in PACKAGES for path in (ROOT / root).rglob("*.py"))


def test_no_function_is_longer_than_the_limit():
    files = project_files()
    assert {p.relative_to(ROOT).parts[0] for p in files} == set(PACKAGES)  # the walk found every package
    offenders = [f for path in files for f in long_functions(path.read_text(), str(path.relative_to(ROOT)))]
    assert offenders == [], f"split these into functions of at most {MAX_FUNCTION_LINES} lines: {offenders}"


def test_the_check_names_a_long_function_and_its_nested_one():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    nested = "    def inner():\n" + "".join(f"    {line}" for line in body.splitlines(keepends=True))
    source = f"def short():\n    pass\n\n\ndef outer():\n{nested}{body}"
    outer_lines, inner_lines = 1 + 2 * MAX_FUNCTION_LINES + 1, MAX_FUNCTION_LINES + 1
    assert long_functions(source, "m.py") == [f"m.py:5 outer ({outer_lines} lines)",
                                              f"m.py:6 inner ({inner_lines} lines)"]
    assert long_functions(source, "m.py", limit=outer_lines) == []
