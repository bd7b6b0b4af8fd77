"""Shared fixtures: a plugin registry and the installed test plugin packages. Helpers are in helpers.py."""
from __future__ import annotations

import pytest

from helpers import FAST, ROOT, TINY, install_plugin_packages, open_backend, plugin_env, run_cli, tiny_model_cfg

__all__ = ["FAST", "ROOT", "TINY", "open_backend", "plugin_env", "run_cli", "tiny_model_cfg"]  # older imports


@pytest.fixture(scope="session")
def registry():
    from harness.plugins import PluginRegistry

    return PluginRegistry.discover()


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    return install_plugin_packages(tmp_path_factory.mktemp("plugins") / "site")


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory):
    """The broken backends (tests/plugins/broken_backend_pkg) installed beside the built-in ones."""
    return install_plugin_packages(tmp_path_factory.mktemp("broken") / "site", ("broken_backend_pkg",))
