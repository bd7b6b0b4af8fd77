"""The declared backend SDK (harness.sdk) is the only part of the harness that backends import."""
from __future__ import annotations

import ast

from helpers import ROOT


def harness_imports(path):
    """(module, name, line) of every import from the harness package in a file (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            found.extend((node.module, a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "harness")
    return found


def test_backends_import_only_the_sdk():
    import harness.sdk

    files = [*sorted((ROOT / "backends").rglob("*.py")), *sorted((ROOT / "tests" / "plugins").rglob("*.py"))]
    assert len(files) > 15
    offenders = [f"{path.relative_to(ROOT)}:{line}: {module}{'.' + name if name else ''}"
                 for path in files for module, name, line in harness_imports(path)
                 if module != "harness.sdk" or name not in harness.sdk.__all__]
    assert offenders == []


def test_every_sdk_name_exists_and_is_documented():
    import harness.sdk

    doc = harness.sdk.__doc__
    for name in harness.sdk.__all__:
        assert getattr(harness.sdk, name) is not None
        assert f"``{name}" in doc, f"{name} is exported but not described in the SDK docstring"
    plugins_doc = (ROOT / "docs" / "plugins.md").read_text()
    assert all(name in plugins_doc for name in harness.sdk.__all__)
