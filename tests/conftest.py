"""Shared fixtures (a plugin registry, the installed test plugin packages) and the fast lane: a test that starts
the command line (``run_cli``, directly or through a fixture) or installs plugin packages must be marked
``@pytest.mark.slow`` by hand (helpers.py checks it when it runs), so ``pytest -m "not slow"`` stays quick.
Helpers are in helpers.py."""
from __future__ import annotations

import os

import pytest

from helpers import SLOW_TESTS, install_plugin_packages


@pytest.fixture(scope="session")
def registry():
    from harness.plugin.plugins import PluginRegistry

    return PluginRegistry.discover()


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    return install_plugin_packages(tmp_path_factory.mktemp("plugins") / "site")


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory):
    """The broken backends (tests/plugins/broken_backend_pkg) installed beside the built-in ones."""
    return install_plugin_packages(tmp_path_factory.mktemp("broken") / "site", ("broken_backend_pkg",))


def pytest_configure(config):
    """Every pytest process (and each xdist worker) reports its peak memory at the end (peak_memory.py), and each
    xdist worker computes on its share of the cores."""
    from peak_memory import PeakMemory

    config.pluginmanager.register(PeakMemory(config), "enginebench-peak-memory")
    _share_the_cores()


def _share_the_cores() -> None:
    """Each of n workers gets cores / n intra-op threads, and so do the command-line runs it starts (through
    OMP_NUM_THREADS, which ONNX Runtime's CPU sessions follow too). Torch's default, one thread per core in every
    process, puts twice as many spinning threads as cores on the machine: measured on 2 cores, a SmolLM2 validation
    took 75 s alone and 196 s beside the other worker. A thread count set by the caller is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Slow tests are marked by hand (``@pytest.mark.slow``); helpers.run_cli and install_plugin_packages refuse
    to run inside a test that is not, so the fast lane cannot grow a fresh interpreter unnoticed."""
    SLOW_TESTS.update(item.nodeid for item in items if item.get_closest_marker("slow"))


@pytest.fixture(autouse=True, scope="module")
def _release_between_modules():
    """One pytest process runs every module: what a module built must not stay alive for the rest of the run.
    After each module: the report's cache of kept samples (up to 4096 cells of arrays), torch.compile's caches
    (each compiled graph holds the module it traced, weights included) and whatever the module's fixtures
    dropped (cycles between models, hooks and sessions are only freed by the collector)."""
    yield
    import gc
    import sys

    aggregate = sys.modules.get("harness.report.aggregate")
    if aggregate is not None:
        aggregate._read_samples.cache_clear()
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()
    gc.collect()
