"""Shared fixtures (a plugin registry, the installed test plugin packages) and the fast lane: a test that starts
the command line (``run_cli``, directly or through a fixture) or installs plugin packages is marked ``slow``, as
are tests marked so by hand, so ``pytest -m "not slow"`` stays quick. Helpers are in helpers.py."""
from __future__ import annotations

import inspect

import pytest

from helpers import install_plugin_packages


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


SLOW_SIGNS = ("run_cli(", "install_plugin_packages(", "nbclient")  # each costs a fresh interpreter (seconds)


def _source(fn) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def _sources(item):
    """The test function's source and that of every fixture it uses (directly or through other fixtures)."""
    yield _source(getattr(item, "function", None))
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        for fixture in defs:
            yield _source(fixture.func)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(sign in src for src in _sources(item) for sign in SLOW_SIGNS):
            item.add_marker(pytest.mark.slow)
