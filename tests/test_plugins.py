"""Plugin discovery: a third-party package installed with pip appears as a backend= choice and runs; observer
plugins can wrap the selected backend's hooks; autoload can be switched off."""
import pandas as pd
import pytest

from helpers import FAST, plugin_env, run_cli
from harness import hookimpl


def _env(site, **extra):
    return plugin_env(site, **extra)


def test_installed_plugin_package_appears_and_runs(plugin_site, tmp_path):
    proc = run_cli("backend=toy-nocache", "backend.label=mine", *FAST, f"output_dir={tmp_path}",
                   env=_env(plugin_site))
    assert proc.returncode == 0, proc.stderr
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert set(tidy.backend) == {"toy-nocache"} and set(tidy.status) == {"ok"} and set(tidy.validation) == {"pass"}
    assert '"label": "mine"' in tidy.backend_info.iloc[0]


def test_autoload_switch_hides_third_party_backends(plugin_site, tmp_path):
    proc = run_cli("backend=toy-nocache", f"output_dir={tmp_path}",
                   env=_env(plugin_site, ENGINEBENCH_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert proc.returncode == 2 and "unknown backend 'toy-nocache'" in proc.stderr
    assert "hf-flashattn-staticcache" in proc.stderr  # built-ins stay


def test_observer_hookwrapper_sees_only_the_selected_backend(registry):
    import torch

    from helpers import open_backend

    calls = []

    class Tracer:
        @hookimpl(hookwrapper=True)
        def decode_step(self, tokens):
            calls.append(tuple(tokens.shape))
            yield

    registry.add_observer(Tracer(), name="tracer")
    try:
        handle, source, _ = open_backend(registry, "hf-flashattn-staticcache")
        handle.prefill(input_ids=torch.tensor([[5, 6, 7]]), prompt_lens=None)
        out = handle.decode_step(tokens=torch.tensor([[8]]))
        assert out.shape == (1, source.config().vocab_size)  # one backend answered (firstresult)
        assert calls == [(1, 1)]
        handle.close()
    finally:
        registry.pm.unregister(name="tracer")


def test_unknown_backend_lists_choices(registry):
    from harness.errors import UserError

    with pytest.raises(UserError, match="unknown backend 'nope'") as err:
        registry.open("nope")
    assert "hf-flashattn-staticcache" in err.value.fix
