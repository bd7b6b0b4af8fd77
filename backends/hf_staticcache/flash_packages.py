"""Which FlashAttention packages are installed, read from their distribution metadata (nothing heavy is imported).

Two packages both provide a module named ``flash_attn``: ``flash-attn`` (FlashAttention-2, ``flash_attn/__init__.py``)
and ``flash-attn-4`` (FlashAttention-4, only the subpackage ``flash_attn.cute``, so with FA4 alone ``flash_attn`` is a
namespace package). "A module called flash_attn imports" therefore says nothing about the version: transformers
takes it for FlashAttention-2 and fails at load. Here each choice asks for its own distribution and major version.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util

FA2_DIST, FA4_DIST = "flash-attn", "flash-attn-4"
FA2_MIN = (2, 6)  # flash_attn_with_kvcache(cache_leftpad=...) arrived in 2.6


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


def _module_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed_flash_attn() -> str:
    """What the ``flash_attn`` module on this interpreter is, in words (for error messages)."""
    found = [f"{dist} {v}" for dist in (FA2_DIST, FA4_DIST) if (v := _version(dist))]
    if found:
        return " and ".join(found)
    return "a flash_attn module of unknown origin" if _module_found("flash_attn") else "no FlashAttention package"


def fa2_problem() -> str | None:
    """None when FlashAttention-2 (flash-attn 2.6+) is installed, else why not (one phrase)."""
    version = _version(FA2_DIST)
    if version is None:
        where = installed_flash_attn()
        return f"flash-attn 2.x is not installed (found {where})"
    if _release(version)[0] != 2:
        return f"flash-attn {version} is installed, not 2.x"
    if _release(version) < FA2_MIN:
        return f"flash-attn {version} is older than 2.6 (no cache_leftpad)"
    if not _module_found("flash_attn.flash_attn_interface"):
        return f"flash-attn {version} is installed but its module flash_attn.flash_attn_interface is missing"
    return None


def fa4_problem() -> str | None:
    """None when FlashAttention-4 (flash-attn-4, module flash_attn.cute) is installed, else why not."""
    version = _version(FA4_DIST)
    if version is None:
        return f"flash-attn-4 is not installed (found {installed_flash_attn()})"
    if _release(version)[0] != 4:
        return f"flash-attn-4 {version} is installed, not 4.x"
    if not _module_found("flash_attn.cute"):
        return f"flash-attn-4 {version} is installed but its module flash_attn.cute is missing"
    return None
