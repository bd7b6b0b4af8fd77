"""enginebench: benchmark LLM inference engines against each other on the same model, inputs and GPU.

Plugins write ``from harness.sdk import hookimpl`` (the backend SDK, :mod:`harness.sdk`, is everything a plugin may
import) and implement the hooks in :mod:`harness.plugin.hookspecs`; docs/plugins.md is the contract.
"""
import pluggy

PROJECT = "enginebench"
hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]
