"""Plugins that misbehave beyond the hook contract cost only the commands that select them: option declarations
that cannot become a config, an import that changes torch's global state or calls sys.exit, a distribution that
calls itself ``enginebench``, and a ``*.dist-info`` planted in the working directory. The packages are real
(tests/plugins/hostile_backend_pkg, tests/plugins/impostor_pkg), installed with pip."""
from __future__ import annotations

import os

import pytest
import torch

from harness.plugin.plugins import PluginRegistry
from harness.plugin.sources import torch_state
from helpers import install_plugin_packages, run_cli


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    return install_plugin_packages(tmp_path_factory.mktemp("hostile") / "site", ("hostile_backend_pkg", "impostor_pkg"))


def _discover(monkeypatch, *paths, **env):
    for path in paths:
        monkeypatch.syspath_prepend(str(path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    lines: list[str] = []
    return PluginRegistry.discover(report=lines.append), lines


@pytest.mark.slow
def test_bad_option_declarations_cost_only_their_backend(hostile_site, monkeypatch):
    from harness.config.compose import register_configs

    registry, lines = _discover(monkeypatch, hostile_site)
    bad = {"hostile-options-not-dataclass": "its options are a type, not a dataclass",
           "hostile-options-instance": "its options are a Fine, not a dataclass",
           "hostile-defaults-object": "its options cannot be a config",
           "hostile-exits-at-import": "failed to import"}
    for name, why in bad.items():
        assert name not in registry.names()
        assert why in registry.unavailable(name).problem, registry.unavailable(name).problem
        assert any(name in line for line in lines)
    assert "hf-flashattn-staticcache" in registry.names()
    register_configs(registry)  # what composition does for every command: no longer raises


@pytest.mark.slow
def test_torch_state_changed_at_import_is_restored_and_reported(hostile_site, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "hostile_backend.torch_state", raising=False)  # import it afresh
    before = torch_state()
    registry, lines = _discover(monkeypatch, hostile_site)
    assert torch_state() == before and torch.get_default_dtype() == torch.float32
    said = [line for line in lines if "hostile-torch-state" in line]
    assert len(said) == 1 and "changed torch's global state" in said[0] and "default dtype" in said[0]
    assert "hostile-torch-state" in registry.names()  # restored, so it may still run


@pytest.mark.slow
@pytest.mark.parametrize("autoload_off", ["0", "1"])
def test_a_distribution_named_enginebench_never_replaces_a_builtin(hostile_site, monkeypatch, autoload_off):
    monkeypatch.delenv("IMPOSTOR_IMPORTED", raising=False)
    registry, lines = _discover(monkeypatch, hostile_site, ENGINEBENCH_DISABLE_PLUGIN_AUTOLOAD=autoload_off)
    assert registry.backend_classes["hf-flashattn-staticcache"].__module__ == "backends.hf_staticcache.plugin"
    assert str(registry.providers["hf-flashattn-staticcache"]).startswith("enginebench ")
    assert "impostor-extra" not in registry.names() and "IMPOSTOR_IMPORTED" not in os.environ
    assert any("ignored entry point 'hf-flashattn-staticcache'" in line for line in lines)


def _plant(folder):
    """What an attacker leaves in a shared folder: a dist-info announcing a backend, and its module."""
    info = folder / "planted-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: planted\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[enginebench.backends]\nplanted = planted_module:Backend\n")
    (folder / "planted_module.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('IMPORTED').write_text('yes')\nclass Backend: pass\n")
    return folder


def test_a_dist_info_planted_in_the_working_directory_is_not_imported(tmp_path, monkeypatch):
    planted = _plant(tmp_path / "shared")
    monkeypatch.chdir(planted)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    registry, _ = _discover(monkeypatch, planted)  # python -m puts the working directory first on sys.path
    assert "planted" not in registry.names() and "planted" not in registry.load_errors
    assert not (planted / "IMPORTED").exists()


@pytest.mark.slow
def test_python_m_harness_in_a_planted_folder_does_not_import_it(tmp_path):
    from helpers import ROOT

    planted = _plant(tmp_path / "shared")
    proc = run_cli("backend=planted", cwd=planted, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "unknown backend 'planted'" in proc.stderr, proc.stderr
    assert not (planted / "IMPORTED").exists()


@pytest.mark.slow
def test_memory_a_backend_leaks_is_not_charged_to_the_next_one(hostile_site, tmp_path):
    """A multirun of a leaking backend, then the HF backend: each job has a process of its own, so the HF rows'
    host memory does not hold the 256 MiB the first backend never freed."""
    import pandas as pd

    from helpers import FAST, plugin_env

    proc = run_cli("-m", "backend=hostile-leaks-memory,hf-flashattn-staticcache", "grid.batch_sizes=[1]",
                   *FAST[1:], "validation.enabled=false", f"hydra.sweep.dir={tmp_path}",
                   env=plugin_env(hostile_site))
    assert proc.returncode == 0, proc.stderr
    from harness.run.multirun import job_dirs

    tidy = pd.concat(pd.read_csv(d / "results.csv") for d in job_dirs(tmp_path))
    rss = tidy[tidy.metric == "host_rss_peak_mib"].set_index("backend").p50
    assert rss["hostile-leaks-memory"] - rss["hf-flashattn-staticcache"] > 128, rss.to_dict()
