"""enginebench: benchmark LLM inference engines against each other on the same model, inputs and GPU.

Plugins write ``from harness import hookimpl`` and implement the hooks in :mod:`harness.hookspecs`.
"""
import pluggy

PROJECT = "enginebench"
hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]
