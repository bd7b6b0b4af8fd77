"""Where plugins may come from, and what importing one may not change.

- The built-in backends are the entry points of *this* installation: the table of the pyproject.toml beside
  ``harness/`` (a source tree or an editable install), or, installed as a wheel, the distribution whose files are
  this very ``harness`` package. Another distribution that merely calls itself ``enginebench`` is a third-party
  package like any other: autoloading off hides it, and it never replaces a built-in backend.
- Third-party entry points are read from the installed paths of ``sys.path`` only. ``python -m harness`` puts the
  working directory first on ``sys.path``; a ``*.dist-info`` folder planted there (a downloaded archive, a shared
  folder) would otherwise be imported. The working directory counts only when ``PYTHONPATH`` names it.
- Importing a plugin may not change torch's process-wide state (intra-op threads, default dtype, deterministic
  mode), which would silently change how every other backend is measured: :func:`torch_state` is taken before and
  compared after each plugin loads; a change is undone and reported in one line.
"""
from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

OWN_DISTRIBUTION = "enginebench"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def builtin_entry_points(group: str) -> list[metadata.EntryPoint]:
    """The entry points this installation declares: pyproject.toml beside the package, else its own dist-info."""
    pyproject = _SOURCE_ROOT / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        table = tomllib.loads(pyproject.read_text()).get("project", {}).get("entry-points", {}).get(group, {})
        return [metadata.EntryPoint(name=name, value=value, group=group) for name, value in table.items()]
    for dist in metadata.distributions():
        if is_this_installation(dist):
            return list(dist.entry_points.select(group=group))
    return []


def is_this_installation(dist: metadata.Distribution) -> bool:
    """True for the distribution whose files are this ``harness`` package (not one that only shares its name)."""
    if _normalized(dist.metadata["Name"] or "") != OWN_DISTRIBUTION:
        return False
    try:
        here = Path(str(dist.locate_file("harness/__init__.py"))).resolve()
        editable = json.loads(dist.read_text("direct_url.json") or "{}")
    except (OSError, TypeError, ValueError):
        return False
    if editable.get("dir_info", {}).get("editable") and editable.get("url", "").startswith("file://"):
        return Path(unquote(editable["url"][len("file://"):])).resolve() == _SOURCE_ROOT  # pip install -e
    return here == Path(__file__).resolve().parent / "__init__.py"


def installed_paths() -> list[str]:
    """``sys.path`` without the working directory that ``python -m`` / ``python -c`` put first (kept only when
    PYTHONPATH names it)."""
    cwd = os.path.realpath(os.getcwd())
    named = {os.path.realpath(p or ".") for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    out = []
    for entry in sys.path:
        real = os.path.realpath(entry or ".")
        if real == cwd and real not in named:
            continue
        out.append(entry)
    return out


def third_party_entry_points(group: str) -> tuple[list[metadata.EntryPoint], list[str]]:
    """Entry points of the installed distributions other than this installation; the second list holds one line
    per entry point ignored because its distribution calls itself ``enginebench`` without being this one."""
    found, ignored, seen = [], [], set()
    for dist in metadata.distributions(path=installed_paths()):
        name = _normalized(dist.metadata["Name"] or "")
        if name in seen:  # the first on the path wins, as for imports
            continue
        seen.add(name)
        if name == OWN_DISTRIBUTION:
            if not is_this_installation(dist):
                builtin = {(ep.name, ep.value) for ep in builtin_entry_points(group)}
                for ep in dist.entry_points.select(group=group):
                    if (ep.name, ep.value) in builtin:
                        continue  # another copy of this project (e.g. an older install): nothing to replace
                    ignored.append(f"entry point '{ep.name}' of a distribution named '{OWN_DISTRIBUTION}' at "
                                   f"{dist.locate_file('')} that is not this installation ({_SOURCE_ROOT})")
            continue
        found.extend(dist.entry_points.select(group=group))
    return found, ignored


def torch_state() -> dict[str, Any]:
    """The process-wide torch settings a plugin's import could change behind the other backends' back."""
    import torch

    return {"threads": torch.get_num_threads(), "default dtype": torch.get_default_dtype(),
            "deterministic algorithms": torch.are_deterministic_algorithms_enabled()}


def restore_torch_state(before: dict[str, Any]) -> list[str]:
    """Put back what changed since ``before``; returns the changes in words (empty when nothing changed)."""
    import torch

    after = torch_state()
    changed = [f"{key} {before[key]} -> {after[key]}" for key in before if after[key] != before[key]]
    if changed:
        torch.set_num_threads(before["threads"])
        torch.set_default_dtype(before["default dtype"])
        torch.use_deterministic_algorithms(before["deterministic algorithms"])
    return changed
