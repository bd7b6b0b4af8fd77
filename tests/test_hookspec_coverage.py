"""Meta-test: every hookspec has a test (a test function named test_hook_<name>...) and a README entry."""
import ast
import inspect

from helpers import ROOT
from harness import hookspecs


def _hook_names():
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "enginebench_spec")]


def _test_function_names():
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
    return names


def test_every_hookspec_has_a_test_and_docs():
    hooks = _hook_names()
    assert set(hooks) >= {"load", "prefill", "decode_step", "reset_kv", "close", "enginebench_backend_defaults"}
    tests = _test_function_names()
    readme = (ROOT / "README.md").read_text()
    for hook in hooks:
        assert any(t.startswith(f"test_hook_{hook}") for t in tests), f"no test_hook_{hook}* test"
        assert f"`{hook}`" in readme, f"README does not document the `{hook}` hook"
