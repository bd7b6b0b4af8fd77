"""Meta-test: every hookspec has a test that exercises it (a test function named test_hook_<name>... whose body
uses the hook or what it declares) and an entry in docs/plugins.md (the contract; the README only links it)."""
import ast
import inspect

from harness.plugin import hookspecs
from helpers import ROOT

# What a test of each hook must touch: the hook itself, or for the options hooks what the harness makes of them.
# The profile's optional hooks are documented in docs/plugins.md and docs/profiling.md, not in the README's summary.
OPTIONAL_PROFILE_HOOKS = ("kernel_category", "profile_kernels")
EVIDENCE = {"enginebench_backend_options": ("option_classes",), "enginebench_backend_defaults": ("defaults(",)}


def _hook_names():
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "enginebench_spec")]


def _test_bodies():
    """test function name -> its source without the ``def`` line."""
    bodies = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                bodies[node.name] = "\n".join(ast.get_source_segment(text, s) or "" for s in node.body)
    return bodies


def test_every_hookspec_has_a_test_and_docs():
    hooks = _hook_names()
    assert set(hooks) >= {"load", "prefill", "decode_step", "reset_kv", "close", "enginebench_backend_options",
                          "enginebench_backend_defaults"}
    bodies = _test_bodies()
    for hook in hooks:
        tests = {name: body for name, body in bodies.items() if name.startswith(f"test_hook_{hook}")}
        assert tests, f"no test_hook_{hook}* test"
        evidence = EVIDENCE.get(hook, (f"{hook}(",))
        assert any(e in body for body in tests.values() for e in evidence), \
            f"the test_hook_{hook}* tests never call {hook}"
        assert f"`{hook}" in (ROOT / "docs" / "plugins.md").read_text(), f"docs/plugins.md lacks `{hook}`"
    for hook in OPTIONAL_PROFILE_HOOKS:
        assert f"`{hook}" in (ROOT / "docs" / "profiling.md").read_text(), f"docs/profiling.md lacks `{hook}`"
