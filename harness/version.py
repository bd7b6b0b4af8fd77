"""``enginebench --version`` and ``enginebench-report --version``: this package's version, then the versions of the
libraries that decide the numbers (read from the installed packages' metadata; nothing is imported)."""
from __future__ import annotations

import importlib.metadata as metadata
import platform

# the libraries named, in this order, where installed
KEY_LIBRARIES = ("torch", "transformers", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx-cu13-bindings",
                 "hydra-core", "numpy", "scipy", "pandas")


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_text() -> str:
    """This package's version, python's, then each key library's that is installed, one per line."""
    own = installed_version("enginebench") or "unknown (not installed)"
    libs = {name: installed_version(name) for name in KEY_LIBRARIES}
    return "\n".join([f"enginebench {own}", f"python {platform.python_version()}",
                      *(f"{name} {version}" for name, version in libs.items() if version)])
